//! The policy for NaN and infinity, shared by the hook (which checks dL/df and the learning
//! rate) and the writer thread (which checks the weights).

/// What the recorder does when a step's loss gradients or new weights hold NaN or infinity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NonFinite {
    /// Record the fault, stop recording, and stop training through the interrupter if one was
    /// given. The store ends at the last finite step.
    #[default]
    Stop,
    /// Record the fault and the step, and keep going; `replay verify` reports the fault.
    Record,
}
