//! flapping: more than `max_transitions` transitions into the same status of
//! one key within `window` of event time (repeated Re-Scheduled, a rollout
//! bouncing between in_progress and paused). The first status of a key is
//! not a transition and does not count; re-reports do not either.
//!
//! Quiet: one finding per episode. An episode of a status ends when, at a
//! later transition of the key, the count within the window is back to at
//! most `max_transitions`; only then can it fire again. The key's memory
//! keeps at most `max_transitions + 1` times per status.

use super::{Anomaly, Change, ChangeKind, Detectors, KeyMemory, RuleId, what};
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::TimeMs;
use crate::model::Model;
use crate::sym::Sym;

pub(super) fn check(
    d: &Detectors,
    model: &Model,
    ch: &Change<'_>,
    mem: &mut KeyMemory,
    out: &mut Vec<Anomaly>,
) {
    let ChangeKind::Transition { .. } = ch.kind else {
        return;
    };
    let now = ch.order_time;
    let keep = d.flapping_max as usize + 1;
    let to = model.id(ch.to);
    mem.into.push(to, now);
    mem.into.retain_times(|times| {
        times.retain(|t| now - t <= d.flapping_window);
        if times.len() > keep {
            times.drain(..times.len() - keep);
        }
    });
    let count = |s: &str| mem.into.count(s);
    let max = d.flapping_max as usize;
    mem.flapping.retain(|s| count(s) > max);
    if count(to) <= max || mem.flapping.iter().any(|s| s == to) {
        return;
    }
    mem.flapping.push(Sym::new(to));
    let message = format!(
        "{} in {} entered {} more than {} times within {} (flapping; latest by {} via {})",
        what(ch.key),
        ch.key.environment,
        model.state(ch.to).display,
        max,
        humantime::format_duration(std::time::Duration::from_millis(d.flapping_window as u64)),
        ch.event.actor,
        ch.event.source,
    );
    out.push(d.record_event(RuleId::Flapping, d.flapping.severity, ch, model, message));
}

/// flapping's memory of one key: the times of the latest transitions into
/// each status, by status. A sorted list, not a `BTreeMap`: a key enters a
/// handful of statuses, and a map's first node (room for eleven) cost ~450
/// bytes for every key that ever moved (issue 23). It reads and writes as
/// the map it replaced (JSON object, the store's list of pairs in key
/// order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntoTimes(Vec<(Sym, Vec<TimeMs>)>);

impl IntoTimes {
    fn at(&self, status: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(s, _)| s.as_str().cmp(status))
    }

    /// Notes a transition into `status` at `t`.
    pub fn push(&mut self, status: &str, t: TimeMs) {
        match self.at(status) {
            Ok(i) => self.0[i].1.push(t),
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, (Sym::new(status), vec![t]));
            }
        }
    }

    /// Sets the times of `status` (replacing any).
    pub fn insert(&mut self, status: Sym, times: Vec<TimeMs>) {
        match self.at(&status) {
            Ok(i) => self.0[i].1 = times,
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, (status, times));
            }
        }
    }

    /// Applies `f` to every status's times; drops the statuses left with none.
    pub fn retain_times(&mut self, mut f: impl FnMut(&mut Vec<TimeMs>)) {
        self.0.retain_mut(|(_, times)| {
            f(times);
            !times.is_empty()
        });
    }

    /// How many times are kept for `status`.
    pub fn count(&self, status: &str) -> usize {
        self.at(status).map_or(0, |i| self.0[i].1.len())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// (status, times), by status.
    pub fn iter(&self) -> impl Iterator<Item = (&Sym, &Vec<TimeMs>)> {
        self.0.iter().map(|(s, t)| (s, t))
    }
}

impl FromIterator<(Sym, Vec<TimeMs>)> for IntoTimes {
    fn from_iter<I: IntoIterator<Item = (Sym, Vec<TimeMs>)>>(iter: I) -> Self {
        let mut m = Self::default();
        for (s, t) in iter {
            m.insert(s, t);
        }
        m
    }
}

impl Serialize for IntoTimes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for IntoTimes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<Sym, Vec<TimeMs>>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn into_times_is_a_sorted_map() {
        let mut m = IntoTimes::default();
        m.push("paused", 1);
        m.push("deployed", 2);
        m.push("paused", 3);
        m.push("in_progress", 4);
        let keys: Vec<&str> = m.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(keys, ["deployed", "in_progress", "paused"]);
        assert_eq!(
            (m.count("paused"), m.count("deployed"), m.count("x")),
            (2, 1, 0)
        );
        m.retain_times(|t| t.retain(|&t| t > 1));
        assert_eq!(m.len(), 3);
        m.retain_times(|t| t.retain(|&t| t > 2));
        assert_eq!(
            m.iter()
                .map(|(s, t)| (s.as_str(), t.clone()))
                .collect::<Vec<_>>(),
            [("in_progress", vec![4]), ("paused", vec![3])]
        );
        // Its JSON is the map's it replaced, and reads back.
        let j = serde_json::to_string(&m).unwrap();
        let as_map: BTreeMap<String, Vec<TimeMs>> = [
            ("in_progress".to_string(), vec![4]),
            ("paused".to_string(), vec![3]),
        ]
        .into();
        assert_eq!(j, serde_json::to_string(&as_map).unwrap());
        assert_eq!(serde_json::from_str::<IntoTimes>(&j).unwrap(), m);
        m.insert(Sym::new("paused"), vec![9]);
        assert_eq!(m.count("paused"), 1);
        assert!(IntoTimes::default().is_empty());
    }
}
