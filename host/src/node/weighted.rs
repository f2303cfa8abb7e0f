//! Smooth weighted round robin (as in nginx): spreads outgoing operations over
//! connections in proportion to their weights, interleaved rather than in bursts.

use std::sync::Mutex;

/// Picks indexes in proportion to their weights.
#[derive(Debug)]
pub struct WeightedPicker {
    weights: Vec<i64>,
    current: Mutex<Vec<i64>>,
}

impl WeightedPicker {
    /// A picker over `weights`; a weight of 0 is never picked, unless all are 0,
    /// in which case every index is picked in turn.
    pub fn new(weights: &[u32]) -> Self {
        let all_zero = weights.iter().all(|w| *w == 0);
        let weights: Vec<i64> = weights.iter().map(|w| if all_zero { 1 } else { i64::from(*w) }).collect();
        Self { current: Mutex::new(vec![0; weights.len()]), weights }
    }

    /// The next index, or `None` when there is nothing to pick.
    pub fn pick(&self) -> Option<usize> {
        match self.weights.len() {
            0 => None,
            1 => Some(0),
            _ => {
                let mut current = crate::sync::lock(&self.current);
                let total: i64 = self.weights.iter().sum();
                let mut best = 0;
                for (i, w) in self.weights.iter().enumerate() {
                    current[i] += w;
                    if current[i] > current[best] {
                        best = i;
                    }
                }
                current[best] -= total;
                Some(best)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_in_proportion_and_interleaved() {
        let picker = WeightedPicker::new(&[3, 1]);
        let picks: Vec<_> = (0..8).filter_map(|_| picker.pick()).collect();
        assert_eq!(picks, [0, 0, 1, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn zero_weight_is_never_picked() {
        let picker = WeightedPicker::new(&[0, 2, 1]);
        let picks: Vec<_> = (0..30).filter_map(|_| picker.pick()).collect();
        assert!(!picks.contains(&0));
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 20);
    }

    #[test]
    fn empty_picks_nothing() {
        assert_eq!(WeightedPicker::new(&[]).pick(), None);
    }
}
