//! The coordinators this order instance hands checkouts to.
//!
//! Every coordinator can run any checkout, and any of them can tell the outcome of any
//! transaction (they share the decision log), so none is needed for checkouts to go on. An
//! instance spreads its checkouts over the coordinators it believes alive, round robin. Belief
//! comes from a probe of each one's `/health` every [`PROBE_INTERVAL`] (a stopped process
//! answers nothing, a dead one refuses the connection) and from calls: a refused connection
//! or a call that ran out of time marks a coordinator down until its probe answers again.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use reqwest::Url;

/// How often each coordinator's `/health` is asked, and how long an answer may take.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(300);

pub struct Coordinators {
    urls: Vec<Url>,
    alive: Vec<AtomicBool>,
    next: AtomicUsize,
}

impl Coordinators {
    pub fn new(urls: Vec<Url>) -> Self {
        let alive = urls.iter().map(|_| AtomicBool::new(true)).collect();
        Self {
            urls,
            alive,
            next: AtomicUsize::new(0),
        }
    }

    pub fn url(&self, index: usize) -> &Url {
        &self.urls[index]
    }

    /// Every coordinator, in the order to try them for the next request: the live ones from
    /// the round-robin position on, then the ones believed down (which may be back).
    pub fn order(&self) -> Vec<usize> {
        let n = self.urls.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let (mut live, mut down): (Vec<usize>, Vec<usize>) = (0..n)
            .map(|k| (start + k) % n)
            .partition(|&i| self.is_alive(i));
        live.append(&mut down);
        live
    }

    pub fn is_alive(&self, index: usize) -> bool {
        self.alive[index].load(Ordering::Relaxed)
    }

    pub fn mark_down(&self, index: usize) {
        if self.alive[index].swap(false, Ordering::Relaxed) {
            tracing::warn!(coordinator = %self.urls[index], "coordinator marked down");
        }
    }

    fn mark_up(&self, index: usize) {
        if !self.alive[index].swap(true, Ordering::Relaxed) {
            tracing::info!(coordinator = %self.urls[index], "coordinator back");
        }
    }

    /// Asks every coordinator for `/health` once, marking each up or down by its answer;
    /// run every [`PROBE_INTERVAL`].
    pub async fn probe(self: Arc<Self>, http: reqwest::Client) {
        let mut probes = tokio::task::JoinSet::new();
        for index in 0..self.urls.len() {
            let http = http.clone();
            let this = self.clone();
            probes.spawn(async move {
                let Ok(url) = this.urls[index].join("/health") else {
                    return;
                };
                let answered = http.get(url).timeout(PROBE_INTERVAL).send().await;
                match answered {
                    Ok(response) if response.status().is_success() => this.mark_up(index),
                    _ => this.mark_down(index),
                }
            });
        }
        while probes.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Coordinators {
        Coordinators::new(vec![
            "http://a:1".parse().unwrap(),
            "http://b:1".parse().unwrap(),
            "http://c:1".parse().unwrap(),
        ])
    }

    #[test]
    fn live_coordinators_take_turns_and_down_ones_come_last() {
        let coordinators = three();
        assert_eq!(coordinators.order(), vec![0, 1, 2]);
        assert_eq!(coordinators.order(), vec![1, 2, 0]);
        coordinators.mark_down(2);
        assert_eq!(coordinators.order(), vec![0, 1, 2]);
        assert_eq!(coordinators.order(), vec![0, 1, 2]);
        coordinators.mark_up(2);
        assert_eq!(coordinators.order(), vec![1, 2, 0]);
    }
}
