//! One switching value's zero crossing inside an interval of a step, by the Illinois variant of
//! regula falsi: exact in one step for values affine in t, bracketing for the rest. The `auto`
//! rule advances all of an interval's searches together, one request an iteration.

use super::auto::Ends;

/// One switching value's root search between the ends of an interval (Illinois regula
/// falsi).
pub(super) struct Root {
    /// Which switching value.
    pub unit: usize,
    ta: f64,
    va: f64,
    tb: f64,
    vb: f64,
    scale: f64,
    side: i8,
    /// The last t evaluated: the root once found.
    pub t: f64,
}

impl Root {
    /// The search for value `unit`, if its sign differs at the ends (a zero at an end, or a
    /// non-finite value: nothing to split at).
    pub fn new(unit: usize, e: &Ends) -> Option<Self> {
        let (va, vb) = (e.sa[unit], e.sb[unit]);
        if va * vb >= 0.0 || !(va * vb).is_finite() {
            return None;
        }
        Some(Root {
            unit,
            ta: e.a,
            va,
            tb: e.b,
            vb,
            scale: va.abs().max(vb.abs()),
            side: 0,
            t: e.a,
        })
    }

    /// The next t to evaluate: the secant's root, or the midpoint if it leaves the bracket.
    pub fn next(&mut self) -> f64 {
        let t = (self.ta * self.vb - self.tb * self.va) / (self.vb - self.va);
        self.t = if t > self.ta && t < self.tb {
            t
        } else {
            0.5 * (self.ta + self.tb)
        };
        self.t
    }

    /// Takes the value `v` at `t`; whether the root is found (to rounding, or the bracket is
    /// a few ulps wide).
    pub fn update(&mut self, v: f64) -> bool {
        if v.abs() <= 4.0 * f64::EPSILON * self.scale || self.tb - self.ta <= 4.0 * f64::EPSILON {
            return true;
        }
        if v * self.va > 0.0 {
            (self.ta, self.va) = (self.t, v);
            if self.side == -1 {
                self.vb *= 0.5;
            }
            self.side = -1;
        } else {
            (self.tb, self.vb) = (self.t, v);
            if self.side == 1 {
                self.va *= 0.5;
            }
            self.side = 1;
        }
        false
    }
}
