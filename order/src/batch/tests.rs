//! The batches' forming rules, on paused time where a wait is the point.

use super::*;

type Sizes = Batches<u32, Vec<u32>>;

fn batches(places: usize, max: usize) -> Arc<Sizes> {
    patient(places, max, Duration::from_secs(30))
}

fn patient(places: usize, max: usize, patience: Duration) -> Arc<Sizes> {
    Arc::new(Batches::new(
        places,
        max,
        patience,
        Duration::from_secs(5),
        Duration::from_secs(3),
        Tasks::new(),
    ))
}

fn budget() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

/// A batch that holds its place until `release` is sent.
fn held(batches: &Sizes, member: u32) -> (tokio::sync::oneshot::Sender<()>, JoinHandle) {
    let (release, hold) = tokio::sync::oneshot::channel::<()>();
    let ticket = batches
        .join(false, budget(), move |_, members: Vec<u32>| async move {
            let _ = hold.await;
            members
        })
        .unwrap();
    (release, tokio::spawn(ticket.run(member)))
}

type JoinHandle = tokio::task::JoinHandle<Option<(usize, Vec<u32>)>>;

fn quick(batches: &Sizes, member: u32) -> JoinHandle {
    let ticket = batches
        .join(
            false,
            budget(),
            |_, members: Vec<u32>| async move { members },
        )
        .unwrap();
    tokio::spawn(ticket.run(member))
}

#[tokio::test]
async fn a_lone_checkout_runs_at_once_and_those_arriving_meanwhile_gather_in_the_next_batch() {
    let batches = batches(1, 16);
    let (release, first) = held(&batches, 0);
    // The only place is taken by the first batch: the next three gather in one.
    let waiting: Vec<_> = (1..=3).map(|member| quick(&batches, member)).collect();
    // One that joined and left (its order was paid) is not waited for.
    drop(
        batches
            .join(
                false,
                budget(),
                |_, members: Vec<u32>| async move { members },
            )
            .unwrap(),
    );
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap(), Some((0, vec![0])));
    for (position, task) in waiting.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), Some((position, vec![1, 2, 3])));
    }
}

#[tokio::test]
async fn a_full_batch_and_one_run_alone_take_no_newcomers() {
    let batches = batches(1, 2);
    let (release, blocker) = held(&batches, 0);
    let run = |_, members: Vec<u32>| async move { members };
    let tickets: Vec<_> = (1..=3)
        .map(|_| batches.join(false, budget(), run).unwrap())
        .collect();
    let alone = batches.join(true, budget(), run).unwrap();
    let txids: Vec<Uuid> = tickets.iter().map(|t| t.attempt().txid).collect();
    assert_eq!(txids[0], txids[1]);
    assert_ne!(txids[1], txids[2], "at most 2 in a batch");
    assert!(!txids.contains(&alone.attempt().txid));
    let tasks: Vec<_> = tickets
        .into_iter()
        .zip(1..)
        .map(|(ticket, member)| tokio::spawn(ticket.run(member)))
        .collect();
    let alone = tokio::spawn(alone.run(9));
    release.send(()).unwrap();
    blocker.await.unwrap();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap().unwrap().1);
    }
    assert_eq!(results, vec![vec![1, 2], vec![1, 2], vec![3]]);
    assert_eq!(alone.await.unwrap(), Some((0, vec![9])));
}

// Time is paused: the clock moves only when every task waits, so "still waiting an hour
// later" is exact, not a guess about scheduling.
#[tokio::test(start_paused = true)]
async fn a_batch_waits_for_the_one_in_flight_though_another_place_is_free() {
    let batches = patient(2, 16, Duration::from_secs(7200));
    let (release, first) = held(&batches, 0);
    let second = quick(&batches, 1);
    let third = quick(&batches, 2);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(!second.is_finished() && !third.is_finished());
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap(), Some((0, vec![0])));
    assert_eq!(second.await.unwrap(), Some((0, vec![1, 2])));
    assert_eq!(third.await.unwrap(), Some((1, vec![1, 2])));
}

#[tokio::test(start_paused = true)]
async fn a_batch_stuck_in_flight_holds_the_next_up_only_for_the_patience() {
    let patience = Duration::from_millis(50);
    let batches = patient(2, 16, patience);
    let started = tokio::time::Instant::now();
    let (release, first) = held(&batches, 0);
    let second = quick(&batches, 1);
    assert_eq!(second.await.unwrap(), Some((0, vec![1])));
    assert!(started.elapsed() >= patience);
    assert!(!first.is_finished(), "the second ran beside the first");
    // With both places taken, the next waits for one, however long.
    let (release_second, blocker) = held(&batches, 2);
    // It takes the free place after its patience, closed to newcomers.
    tokio::time::sleep(patience * 2).await;
    let fourth = quick(&batches, 3);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(!fourth.is_finished(), "a third batch in flight");
    release.send(()).unwrap();
    assert_eq!(fourth.await.unwrap(), Some((0, vec![3])));
    release_second.send(()).unwrap();
    first.await.unwrap();
    blocker.await.unwrap();
}

#[tokio::test]
async fn no_attempt_is_made_that_would_end_after_the_budget() {
    let batches = batches(1, 16);
    let short = Instant::now() + Duration::from_secs(1);
    assert!(batches
        .join(false, short, |_, members: Vec<u32>| async move { members })
        .is_none());
    assert!(!batches.fits(short));
    assert!(batches.fits(budget()));
}
