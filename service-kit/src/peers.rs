//! The instances of one peer service, any of which can serve a call.
//!
//! An order instance hands checkouts to any coordinator; a coordinator asks any instance of a
//! participant for its vote. Calls are spread over the instances believed alive, round robin.
//! Belief comes from a probe of each one's `/health` every [`PROBE_INTERVAL`] (a stopped
//! process answers nothing, a dead one refuses the connection) and from calls: a refused
//! connection or a call that ran out of time marks an instance down until its probe answers
//! again. Calling instances directly rather than through a proxy saves a hop each way, and the
//! caller learns of a dead instance from its own refused connection, at once.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use reqwest::Url;

use crate::tasks::Tasks;

/// How often each instance's `/health` is asked, and how long an answer may take.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(300);

pub struct Peers {
    /// What the instances are, for logs: "coordinator", "stock".
    kind: String,
    urls: Vec<Url>,
    alive: Vec<AtomicBool>,
    next: AtomicUsize,
}

impl Peers {
    /// Every instance starts out believed alive.
    pub fn new(kind: impl Into<String>, urls: Vec<Url>) -> Self {
        let alive = urls.iter().map(|_| AtomicBool::new(true)).collect();
        Self {
            kind: kind.into(),
            urls,
            alive,
            next: AtomicUsize::new(0),
        }
    }

    pub fn url(&self, index: usize) -> &Url {
        &self.urls[index]
    }

    pub fn urls(&self) -> &[Url] {
        &self.urls
    }

    /// Every instance, in the order to try them for the next call: the live ones from the
    /// round-robin position on, then the ones believed down (which may be back).
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
            tracing::warn!(kind = %self.kind, url = %self.urls[index], "instance marked down");
        }
    }

    fn mark_up(&self, index: usize) {
        if !self.alive[index].swap(true, Ordering::Relaxed) {
            tracing::info!(kind = %self.kind, url = %self.urls[index], "instance back");
        }
    }

    /// Probes every instance every [`PROBE_INTERVAL`] until `tasks` stop.
    pub fn watch(self: &Arc<Self>, tasks: &Tasks, http: reqwest::Client) {
        let peers = self.clone();
        tasks.every(PROBE_INTERVAL, move || peers.clone().probe(http.clone()));
    }

    /// Asks every instance for `/health` once, marking each up or down by its answer.
    async fn probe(self: Arc<Self>, http: reqwest::Client) {
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

    fn three() -> Peers {
        Peers::new(
            "coordinator",
            vec![
                "http://a:1".parse().unwrap(),
                "http://b:1".parse().unwrap(),
                "http://c:1".parse().unwrap(),
            ],
        )
    }

    #[test]
    fn live_instances_take_turns_and_down_ones_come_last() {
        let peers = three();
        assert_eq!(peers.order(), vec![0, 1, 2]);
        assert_eq!(peers.order(), vec![1, 2, 0]);
        peers.mark_down(2);
        assert_eq!(peers.order(), vec![0, 1, 2]);
        assert_eq!(peers.order(), vec![0, 1, 2]);
        peers.mark_up(2);
        assert_eq!(peers.order(), vec![1, 2, 0]);
    }
}
