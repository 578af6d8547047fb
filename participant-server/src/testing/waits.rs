//! The scenarios of a branch that meets a row another prepared branch holds: it waits for
//! the row only while waiting can end in a yes, is checked again as the row is once locked,
//! and gives up at its deadline.

use std::time::Duration;

use reqwest::StatusCode;
use twopc::finish::{commit_prepared, rollback_prepared, CommitResult, RollbackResult};

use super::{new_gid, yes, TestServer};
use crate::Participant;

impl<P: Participant> TestServer<P> {
    /// A row held by another prepared branch makes prepare vote a transient no once its
    /// deadline passes, and the holder is left as it was.
    pub async fn assert_a_held_row_makes_prepare_vote_a_transient_no(&self) {
        self.init(1, 10).await;
        let holder = new_gid::<P>();
        let (_, vote) = self.prepare(&holder, (self.books.take)("0", 1)).await;
        assert_eq!(vote, yes());

        let waiter = new_gid::<P>();
        let within = Duration::from_millis(50);
        let (status, vote) = self
            .prepare_within(&waiter, (self.books.take)("0", 1), within)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(vote["vote"], "no");
        assert_eq!(vote["business"], false);
        assert_eq!(self.prepared_gids().await, vec![holder.to_string()]);

        assert_eq!(
            rollback_prepared(&self.pool, &holder).await.unwrap(),
            RollbackResult::RolledBack
        );
        assert_eq!(self.balance("0").await, 10);
    }

    /// A lone take whose row another prepared branch holds, and whose committed balance is
    /// enough, waits for the row and is checked again as it is once locked: the holder's
    /// commit leaves too little, so it is refused with what is left.
    pub async fn assert_a_lone_take_that_waited_is_checked_as_locked(&self) {
        self.init(1, 5).await;
        let holder = new_gid::<P>();
        let (_, vote) = self.prepare(&holder, (self.books.take)("0", 3)).await;
        assert_eq!(vote, yes());

        let waiter = new_gid::<P>();
        let ((status, vote), committed) =
            tokio::join!(self.prepare(&waiter, (self.books.take)("0", 3)), async {
                self.wait_until_a_session_waits_for_a_lock().await;
                commit_prepared(&self.pool, &holder).await.unwrap()
            });
        assert_eq!(committed, CommitResult::Committed);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(vote["vote"], "no");
        assert_eq!(vote["business"], true, "{vote}");
        assert!(
            vote["message"].as_str().unwrap().contains(" 2, 3 wanted")
                || vote["message"]
                    .as_str()
                    .unwrap()
                    .contains(" 2 left, 3 wanted"),
            "{vote}"
        );
        assert!(self.prepared_gids().await.is_empty());
        assert_eq!(self.balance("0").await, 2);
    }

    /// A lone take of more than a row's committed balance is refused at once, a business no,
    /// even with the row held by a prepared branch: it never waits for the row's lock (it
    /// would wait until its deadline, and vote a transient no).
    pub async fn assert_a_lone_take_of_a_short_held_row_is_refused_at_once(&self) {
        self.init(1, 5).await;
        let holder = new_gid::<P>();
        let (_, vote) = self.prepare(&holder, (self.books.take)("0", 1)).await;
        assert_eq!(vote, yes());

        let within = Duration::from_secs(2);
        let (status, vote) = self
            .prepare_within(&new_gid::<P>(), (self.books.take)("0", 6), within)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(vote["vote"], "no");
        assert_eq!(vote["business"], true, "{vote}");
        assert_eq!(self.prepared_gids().await, vec![holder.to_string()]);
        assert_eq!(
            commit_prepared(&self.pool, &holder).await.unwrap(),
            CommitResult::Committed
        );
        assert_eq!(self.balance("0").await, 4);
    }

    /// Waits until some session of the test database waits for a row lock.
    pub async fn wait_until_a_session_waits_for_a_lock(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity \
                 where datname = current_database() and wait_event_type = 'Lock'",
            )
            .fetch_one(&self.pool)
            .await
            .unwrap();
            if waiting > 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no session waits for a lock"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
