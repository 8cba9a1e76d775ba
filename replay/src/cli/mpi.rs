//! `mpirun -n N replay verify|attribute|layers …` (cargo feature `mpi`, rsmpi): every rank runs
//! the same command, replays one tile of it ([`crate::shard`]: stretches of steps first, then
//! blocks of points), and sends its partial machine to rank 0, which joins them and reports
//! exactly as one process would. The other ranks print nothing and exit 0; any rank's error
//! aborts the whole job (MPI_Abort) with that rank's message, so no rank waits forever.

use crate::shard::{Job, Partial, Plan, STRETCH_MEMORY, reduce, replay_tile};
use crate::{KernelMachine, Network, ReplayOptions};
use anyhow::{Context, Result, bail};
use epk_model::EpkModel;
use epk_store::StoreReader;
use mpi::datatype::PartitionMut;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use std::cell::RefCell;

thread_local! {
    /// MPI_COMM_WORLD when the job has more than one rank.
    static WORLD: RefCell<Option<SimpleCommunicator>> = const { RefCell::new(None) };
}

/// MPI for the life of the command: dropped last, which finalizes it.
pub(super) struct Session {
    _universe: mpi::environment::Universe,
}

/// Initialises MPI; with more than one rank, only the commands that replay may run.
pub(super) fn init(command: &super::Command) -> Result<Session> {
    let universe = mpi::initialize().context("MPI could not be initialised")?;
    let world = universe.world();
    if world.size() > 1 {
        use super::Command::{Attribute, Layers, Verify};
        if !matches!(command, Verify(_) | Attribute(_) | Layers(_)) {
            if world.rank() == 0 {
                eprintln!(
                    "error: under mpirun only verify, attribute and layers are split over \
                     ranks; run this command as one process"
                );
            }
            world.abort(2);
        }
        WORLD.with(|w| *w.borrow_mut() = Some(world));
        // A panic would unwind into MPI_Finalize, which waits for every rank, while rank 0
        // waits for this rank's tile: report it, then end the whole job.
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            report(info);
            SimpleCommunicator::world().abort(101);
        }));
    }
    Ok(Session {
        _universe: universe,
    })
}

/// With more than one rank: ends every rank now with `code` (after a rank's error).
pub(super) fn abort_others(code: i32) {
    WORLD.with(|w| {
        if let Some(world) = w.borrow().as_ref() {
            world.abort(code);
        }
    });
}

/// A rank other than 0 has sent its tile: it has nothing more to do.
#[derive(Debug, thiserror::Error)]
#[error("this rank's tile went to rank 0")]
pub(super) struct Contributed;

/// `Some(machine)` on rank 0 when the job runs on several ranks; `Err(Contributed)` on the
/// others; `None` when there is one process.
pub(super) fn replay<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    options: &ReplayOptions,
    json: bool,
) -> Result<Option<KernelMachine>> {
    WORLD.with(|w| match w.borrow().as_ref() {
        None => Ok(None),
        Some(world) => distributed(world, reader, net, xs, options, json).map(Some),
    })
}

/// This rank's tile, gathered on rank 0 and joined there.
fn distributed<M: EpkModel>(
    world: &SimpleCommunicator,
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    options: &ReplayOptions,
    json: bool,
) -> Result<KernelMachine> {
    let (rank, size) = (world.rank() as usize, world.size() as usize);
    if options.adjoint_bytes != crate::machine::ADJOINT_BYTES {
        // Each rank's tile is sized by the plan below, not by the one-process budget.
        bail!(
            "--adjoint-memory applies to one process; under mpirun the tiles are sized by the plan"
        );
    }
    let points = xs.len() / net.input_len();
    let plan = Plan::for_store(size, reader, points, STRETCH_MEMORY).context("mpirun -n")?;
    let job = Job::new(reader, points, options, plan);
    let tile = plan.tile(rank, reader.steps(), points);
    let mut progress = (rank == 0)
        .then(|| super::progress::Progress::new("replay (rank 0's tile)", tile.steps.len(), json));
    let partial = replay_tile(reader, net, xs, options, &job, rank, |s| {
        if let Some(p) = progress.as_mut() {
            p.set(s)
        }
    })
    .with_context(|| format!("rank {rank}: replay failed"))?;
    if let Some(p) = progress {
        p.finish();
    }
    let bytes = partial.to_bytes()?;
    let Ok(len) = i32::try_from(bytes.len()) else {
        bail!(
            "rank {rank}: its tile is {} bytes, more than one MPI message carries; run more \
             ranks or `replay shard`",
            bytes.len()
        );
    };
    let root = world.process_at_rank(0);
    if rank != 0 {
        root.gather_into(&len);
        root.gather_varcount_into(&bytes[..]);
        return Err(Contributed.into());
    }
    let mut lens = vec![0i32; size];
    root.gather_into_root(&len, &mut lens[..]);
    let offsets: Vec<i32> = lens
        .iter()
        .scan(0i64, |at, &l| {
            let o = *at;
            *at += l as i64;
            Some(i32::try_from(o).ok())
        })
        .collect::<Option<_>>()
        .context("the tiles together exceed one MPI message; run `replay shard`")?;
    let mut all = vec![0u8; lens.iter().map(|&l| l as usize).sum()];
    let mut partition = PartitionMut::new(&mut all[..], &lens[..], &offsets[..]);
    root.gather_varcount_into_root(&bytes[..], &mut partition);
    let partials = lens
        .iter()
        .zip(&offsets)
        .map(|(&l, &o)| Partial::from_bytes(&all[o as usize..o as usize + l as usize]))
        .collect::<Result<Vec<_>, _>>()?;
    reduce(partials).context("cannot join the ranks' tiles")
}
