//! Replay split into tiles, computed apart and joined: a stretch of steps × a block of points.
//!
//! Replay costs steps × points × Jacobian evaluations, and both factors split. A [`Plan`] cuts
//! the steps into `stretches` and the points into `blocks`; tile `index` of `count` is fixed by
//! the plan and the job alone, so any launcher can run it: `replay shard --index I --count N`
//! under a job array (Slurm `--array`, Kubernetes Indexed Jobs, GNU parallel), or one MPI rank
//! each under `mpirun` (feature `mpi`). Each tile leaves a [`Partial`]; [`reduce`] joins them.
//!
//! Plain gradient descent needs nothing more: a stretch's attributions are its steps' terms.
//! Optimizers with state carry an adjoint backward across the whole run, so a stretch keeps the
//! affine map by which the later steps' adjoint reaches it ([`Boundary`]), and the reduction
//! applies those maps from the last stretch to the first.
//!
//! **Reproducibility.** On a plain run, and on a stateful run's last stretch, a tile computes
//! exactly what the one-process replay computes for its steps and points (the same arithmetic in
//! the same order); earlier stateful stretches start from a zero adjoint and are corrected at
//! the join. The reduction adds the stretches' compensated sums in step order, and the boundary
//! terms as a matrix product.
//! Whatever the order tiles finish in, the joined machine is the same to the bit; against the
//! one-process machine it differs by the rounding of those few extra additions: a few units in
//! the last place, within 1e-15 relative (absolute below 1) on the test runs (`tests/shard.rs`),
//! which is an observation, not a bound.
//!
//! Record eight steps with momentum, cut the replay into two stretches × two blocks, join:
//!
//! ```
//! # use burn::data::dataloader::batcher::Batcher;
//! # use burn::optim::{SgdConfig, momentum::MomentumConfig};
//! # use burn::train::TrainStep;
//! # use epk_recorder::{IndexedBatcher, IndexedItem, Loss, Recorder, Samples, WithRecorder};
//! use epk_model::{device::flex_f64, models::{Mlp, MlpConfig}};
//! use epk_replay::shard::{Job, Plan, reduce, replay_tile};
//! use epk_replay::{Network, ReplayOptions, replay};
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("run.zarr");
//! let device = flex_f64().unwrap();
//! # let xs: Vec<f64> = (0..24).map(|i| ((i * 5) % 13) as f64 / 6.0 - 1.0).collect();
//! # let data = |r: std::ops::Range<usize>| {
//! #     let inputs = xs[r.start * 4..r.end * 4].to_vec();
//! #     Samples::new(inputs, vec![4], r.map(|i| (i % 2) as i64).collect()).unwrap()
//! # };
//! # let (train, eval) = (data(0..4), data(4..6));
//! # let config = MlpConfig::new(vec![4, 5, 2]).with_log_softmax(true);
//! # let sgd = SgdConfig::new().with_momentum(Some(MomentumConfig::new()));
//! # let recorder = Recorder::builder(&path)
//! #     .model_config::<Mlp>(&config)
//! #     .loss(Loss::NllLogSoftmax)
//! #     .sgd(&sgd)
//! #     .train_data(train.clone())
//! #     .eval_data(eval);
//! # let mut model = Mlp::new(&config, &device).with_recorder(recorder).unwrap();
//! # let mut optim = sgd.init();
//! # let items: Vec<IndexedItem> = (0..4)
//! #     .map(|i| IndexedItem { index: i, input: train.input(i).to_vec(), target: train.targets[i] })
//! #     .collect();
//! # for _ in 0..8 {
//! #     let out = TrainStep::step(&model, IndexedBatcher.batch(items.clone(), &device));
//! #     model = TrainStep::optimize(model, &mut optim, 0.2.into(), out.grads);
//! # }
//! # model.finish().unwrap();
//! // `path` holds a recorded momentum run.
//! let reader = epk_store::StoreReader::open(&path).unwrap();
//! let net = Network::<Mlp>::new(reader.attrs(), &device).unwrap();
//! let eval = reader.eval().unwrap();
//! let options = ReplayOptions::default();
//! let plan = Plan::with_stretches(4, 2, reader.steps(), eval.len()).unwrap();
//! let job = Job::new(&reader, eval.len(), &options, plan);
//! // Each tile could run in its own process, anywhere the store is readable.
//! let tiles: Vec<_> = (0..plan.count())
//!     .map(|i| replay_tile(&reader, &net, &eval.inputs, &options, &job, i, |_| {}).unwrap())
//!     .collect();
//! let joined = reduce(tiles).unwrap();
//! let whole = replay(&reader, &net, &eval.inputs, &options, |_| {}).unwrap();
//! assert!(joined.max_error() < 1e-12);
//! let gap = (&joined.attributions - &whole.attributions).iter().fold(0.0f64, |m, v| m.max(v.abs()));
//! assert!(gap < 1e-15);
//! ```

mod partial;
mod reduce;

pub use crate::machine::boundary::Boundary;
pub use partial::{Partial, check_job, read_partials, write_partial};
pub use reduce::reduce;
pub(crate) use reduce::side_by_side;

use crate::machine::replay_steps;
use crate::{Network, ReplayError, ReplayOptions};
use epk_model::EpkModel;
use epk_store::StoreReader;
use std::ops::Range;

/// How a job is cut: `stretches` of steps × `blocks` of points, `stretches · blocks` tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// Stretches of consecutive steps.
    pub stretches: usize,
    /// Blocks of consecutive points.
    pub blocks: usize,
}

impl Plan {
    /// `count` tiles over `steps` steps and `points` points, cutting the steps first: a stretch
    /// costs its share of the work and nothing more, while every block of points repeats the
    /// training side of every step (the per-sample gradients). Stretches are the largest
    /// divisor of `count` that leaves every stretch a step and every block a point.
    pub fn new(count: usize, steps: usize, points: usize) -> Result<Plan, ReplayError> {
        Plan::candidates(count, steps, points)
            .into_iter()
            .next()
            .ok_or_else(|| {
                ReplayError::Input(format!(
                    "{count} tiles cannot be cut as stretches × blocks with a step in every \
                     stretch and a point in every block ({steps} steps, {points} points): choose \
                     a count that is at most {steps} stretches times at most {points} blocks"
                ))
            })
    }

    /// Every cut of `count` tiles that leaves each stretch a step and each block a point, the
    /// most stretches first.
    fn candidates(count: usize, steps: usize, points: usize) -> Vec<Plan> {
        (1..=count.min(steps))
            .rev()
            .filter(|s| count.is_multiple_of(*s))
            .map(|s| Plan {
                stretches: s,
                blocks: count / s,
            })
            .filter(|p| p.blocks <= points)
            .collect()
    }

    /// [`Plan::new`] for the store `reader`: when its optimizer has state and the stretches'
    /// H (samples seen × P × 8 bytes, [`Boundary`]) would exceed `budget` bytes, one stretch
    /// (which keeps no H) with the points cut `count` ways; when the points are too few for
    /// that, the most stretches, whose H is smallest.
    pub fn for_store(
        count: usize,
        reader: &StoreReader,
        points: usize,
        budget: u64,
    ) -> Result<Plan, ReplayError> {
        let steps = reader.steps();
        let plain = crate::Optimizer::from_spec(&reader.attrs().optimizer)?.is_plain();
        // One stretch ends the run and keeps no H; more stretches keep less each.
        let fits = |p: &Plan| -> Result<bool, ReplayError> {
            Ok(plain || p.stretches == 1 || stretch_bytes(reader, p.stretches)? <= budget)
        };
        let feasible = Plan::candidates(count, steps, points);
        for plan in &feasible {
            if fits(plan)? {
                return Ok(*plan);
            }
        }
        match feasible.first() {
            Some(plan) => Ok(*plan),
            None => Plan::new(count, steps, points),
        }
    }

    /// Exactly `stretches` stretches (and `count / stretches` blocks).
    pub fn with_stretches(
        count: usize,
        stretches: usize,
        steps: usize,
        points: usize,
    ) -> Result<Plan, ReplayError> {
        let plan = Plan {
            stretches,
            blocks: count / stretches.max(1),
        };
        if stretches == 0
            || !count.is_multiple_of(stretches)
            || stretches > steps
            || plan.blocks > points
        {
            return Err(ReplayError::Input(format!(
                "{stretches} stretches do not divide {count} tiles over {steps} steps × \
                 {points} points"
            )));
        }
        Ok(plan)
    }

    /// How many tiles.
    pub fn count(&self) -> usize {
        self.stretches * self.blocks
    }

    /// Tile `index`: stretch `index / blocks`, block `index % blocks`, each an even cut.
    pub fn tile(&self, index: usize, steps: usize, points: usize) -> Tile {
        let (s, b) = (index / self.blocks, index % self.blocks);
        let cut = |i: usize, parts: usize, n: usize| i * n / parts..(i + 1) * n / parts;
        Tile {
            index,
            steps: cut(s, self.stretches, steps),
            points: cut(b, self.blocks, points),
        }
    }
}

/// The largest H a stateful stretch keeps when the run is cut into `stretches`: the distinct
/// samples in a stretch's batches × P × 8 bytes (the last stretch keeps none).
pub fn stretch_bytes(reader: &StoreReader, stretches: usize) -> Result<u64, ReplayError> {
    let a = reader.attrs();
    let plan = Plan {
        stretches: stretches.max(1),
        blocks: 1,
    };
    let mut largest = 0;
    for s in 0..plan.stretches - 1 {
        let mut seen = vec![false; a.train_samples];
        for step in plan.tile(s, reader.steps(), 1).steps {
            for i in reader.batch(step)?.indices {
                seen[i] = true;
            }
        }
        largest = largest.max(seen.iter().filter(|&&x| x).count());
    }
    Ok((largest * a.num_params * 8) as u64)
}

/// The budget for one stretch's H that `replay shard` and MPI plan with: 1 GiB.
pub const STRETCH_MEMORY: u64 = 1 << 30;

/// One tile of a plan.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tile {
    /// Its index in the plan.
    pub index: usize,
    /// Its stretch of steps.
    pub steps: Range<usize>,
    /// Its block of points.
    pub points: Range<usize>,
}

/// What every tile of one job must share.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Job {
    /// Committed steps when the job was cut (a store still being written grows).
    pub steps: usize,
    /// Points explained: the first `points` of the inputs.
    pub points: usize,
    /// The quadrature rule, as written on the command line.
    pub rule: String,
    /// The machine's tolerance.
    pub tolerance: f64,
    /// Parameter groups the attributions are split by.
    pub groups: Vec<Range<usize>>,
    /// The cut.
    pub plan: Plan,
}

impl Job {
    /// The job of replaying the first `points` inputs of `reader` with `options`, cut by `plan`.
    pub fn new(reader: &StoreReader, points: usize, options: &ReplayOptions, plan: Plan) -> Job {
        Job {
            steps: reader.steps(),
            points,
            rule: options.rule.to_string(),
            tolerance: options.tolerance,
            groups: options.groups.clone(),
            plan,
        }
    }
}

/// Replays tile `index` of `job` for the inputs `xs` (flat, at least `job.points` of them):
/// its stretch of steps for its block of points. `progress` counts the stretch's steps done.
pub fn replay_tile<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    options: &ReplayOptions,
    job: &Job,
    index: usize,
    progress: impl FnMut(usize),
) -> Result<Partial, ReplayError> {
    if index >= job.plan.count() {
        return Err(ReplayError::Input(format!(
            "tile {index} of a job of {} tiles",
            job.plan.count()
        )));
    }
    if reader.steps() != job.steps {
        return Err(ReplayError::Input(format!(
            "the job was cut for {} steps and the store has {} committed",
            job.steps,
            reader.steps()
        )));
    }
    if options.rule.to_string() != job.rule
        || options.tolerance != job.tolerance
        || options.groups != job.groups
    {
        return Err(ReplayError::Input(format!(
            "the job replays with rule {} at tolerance {:e}, and this tile was asked for rule {} \
             at {:e}",
            job.rule, job.tolerance, options.rule, options.tolerance
        )));
    }
    let len = net.input_len();
    if xs.len() < job.points * len {
        return Err(ReplayError::Input(format!(
            "the job explains {} points and {} were given",
            job.points,
            xs.len() / len
        )));
    }
    let tile = job.plan.tile(index, job.steps, job.points);
    let block = &xs[tile.points.start * len..tile.points.end * len];
    let started = std::time::Instant::now();
    let part = replay_steps(reader, net, block, options, tile.steps.clone(), progress)?;
    Ok(Partial {
        job: job.clone(),
        tile,
        machine: part.machine,
        coefficients: part.coefficients,
        boundary: part.boundary,
        seconds: started.elapsed().as_secs_f64(),
    })
}
