/// A labelled data set held flat: `inputs` is `[len, input_shape...]` in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Samples {
    /// Every sample's input values, one after another, each row-major.
    pub inputs: Vec<f64>,
    /// The shape of one input sample.
    pub input_shape: Vec<usize>,
    /// One class label per sample.
    pub targets: Vec<i64>,
}

impl Samples {
    /// Checks that `inputs` holds one `input_shape` sample per target.
    pub fn new(
        inputs: Vec<f64>,
        input_shape: Vec<usize>,
        targets: Vec<i64>,
    ) -> Result<Self, String> {
        let per: usize = input_shape.iter().product();
        if per == 0 || inputs.len() != per * targets.len() {
            return Err(format!(
                "{} input values do not make {} samples of shape {:?}",
                inputs.len(),
                targets.len(),
                input_shape
            ));
        }
        Ok(Samples {
            inputs,
            input_shape,
            targets,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Values of one input sample.
    pub fn input(&self, i: usize) -> &[f64] {
        let per: usize = self.input_shape.iter().product();
        &self.inputs[i * per..(i + 1) * per]
    }

    /// Values of the samples `indices`, concatenated.
    pub fn gather(&self, indices: &[usize]) -> Vec<f64> {
        indices
            .iter()
            .flat_map(|&i| self.input(i))
            .copied()
            .collect()
    }
}
