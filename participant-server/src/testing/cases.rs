//! The scenarios both participants' tests run over their own [`Books`]: a service's own
//! routes (`ok`, `init`, health), bad input, lost updates, and phase one with its refusals;
//! and the macros that make each a test of its own in both crates.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use twopc::finish::{
    commit_prepared, marker_exists, rollback_prepared, CommitResult, RollbackResult,
};

use super::{new_gid, yes, Books, TestServer};
use crate::Participant;

impl<P> TestServer<P> {
    /// POSTs `path` and asserts a 200.
    pub async fn ok(&self, path: &str) {
        let (status, body) = self.post(path).await;
        assert_eq!(status, StatusCode::OK, "POST {path}: {body}");
    }

    /// Creates rows "0".."n-1" holding `amount` each, through the public route.
    pub async fn init(&self, n: u32, amount: i64) {
        self.ok(&(self.books.batch_init)(n, amount)).await;
    }

    /// The committed balance of row `id`, read on the database.
    pub async fn balance(&self, id: &str) -> i64 {
        let Books { table, column, .. } = self.books;
        sqlx::query_scalar(&format!("select {column} from {table} where id = $1"))
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|error| panic!("{column} of {id}: {error}"))
    }

    /// Every row with its balance, in id order: what a refused request must leave as it was.
    pub async fn balances(&self) -> Vec<(String, i64)> {
        let Books { table, column, .. } = self.books;
        sqlx::query_as(&format!("select id, {column} from {table} order by id"))
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    pub async fn row_count(&self) -> i64 {
        sqlx::query_scalar(&format!("select count(*) from {}", self.books.table))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// True when another transaction holds a row lock on row `id`.
    pub async fn is_locked(&self, id: &str) -> bool {
        let mut tx = self.pool.begin().await.unwrap();
        let sql = format!(
            "select 1 from {} where id = $1 for update nowait",
            self.books.table
        );
        match sqlx::query(&sql).bind(id).execute(&mut *tx).await {
            Ok(_) => false,
            Err(error) if twopc::sqlstate::has_code(&error, "55P03") => true,
            Err(error) => panic!("{error}"),
        }
    }

    /// Sends phase one of `gid` with `work`, to be prepared within a second.
    pub async fn prepare(&self, gid: &twopc::Gid, work: Value) -> (StatusCode, Value) {
        self.prepare_within(gid, work, Duration::from_secs(1)).await
    }

    pub async fn prepare_within(
        &self,
        gid: &twopc::Gid,
        work: Value,
        within: Duration,
    ) -> (StatusCode, Value) {
        let body = serde_json::json!({
            "gid": gid.to_string(),
            "deadline": twopc::Deadline::after(within),
            "work": work,
        });
        self.post_json(twopc::wire::routes::PREPARE, &body).await
    }

    /// Asserts that every reply of `paths` (with whether each is a POST) is a 200 in JSON.
    pub async fn assert_replies_are_json(&self, paths: &[(&str, bool)]) {
        for &(path, post) in paths {
            let url = format!("{}{path}", self.base);
            let request = if post {
                self.http.post(url)
            } else {
                self.http.get(url)
            };
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(
                response.headers()["content-type"],
                "application/json",
                "{path}"
            );
        }
    }

    /// Asserts that every request of `bad` is refused as it says, and that none changed a row.
    pub async fn assert_bad_input_refused(&self, bad: BadInput) {
        let before = self.balances().await;
        for path in &bad.bad_posts {
            let (status, body) = self.post(path).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "POST {path}: {body}");
            assert!(!body.is_empty(), "POST {path} says why");
        }
        for path in &bad.bad_gets {
            let (status, body) = self.get(path).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "GET {path}: {body}");
        }
        for path in bad.unrouted_posts {
            assert_eq!(
                self.post(path).await.0,
                StatusCode::NOT_FOUND,
                "POST {path}"
            );
        }
        for path in bad.unrouted_gets {
            assert_eq!(self.get(path).await.0, StatusCode::NOT_FOUND, "GET {path}");
        }
        for path in bad.post_only {
            let status = self.get(path).await.0;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "GET {path}");
        }
        for path in bad.get_only {
            let status = self.post(path).await.0;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "POST {path}");
        }
        assert_eq!(self.balances().await, before);
    }

    /// Two hundred concurrent adds of one to one row lose no update.
    pub async fn assert_concurrent_adds_lose_no_update(&self) {
        self.init(1, 0).await;
        let path = (self.books.add)("0", 1);
        let handles: Vec<_> = (0..200)
            .map(|_| {
                let request = self.http.post(self.url(&path));
                tokio::spawn(async move { request.send().await.unwrap().status() })
            })
            .collect();
        for handle in handles {
            assert_eq!(handle.await.unwrap(), StatusCode::OK);
        }
        assert_eq!(self.balance("0").await, 200);
    }

    pub async fn assert_health_and_metrics_answer(&self) {
        assert_eq!(self.get("/health").await, (StatusCode::OK, "ok".to_owned()));
        self.init(1, 1).await;
        assert_eq!(self.get("/metrics").await.0, StatusCode::OK);
    }
}

/// Requests a participant's public routes must refuse, by how.
#[derive(Default)]
pub struct BadInput {
    /// POSTs refused with 400 and a reason.
    pub bad_posts: Vec<String>,
    /// GETs refused with 400.
    pub bad_gets: Vec<String>,
    /// Paths no route matches (a trailing empty segment, unknown routes), for POST and GET.
    pub unrouted_posts: &'static [&'static str],
    pub unrouted_gets: &'static [&'static str],
    /// Routes of the other method: refused with 405.
    pub post_only: &'static [&'static str],
    pub get_only: &'static [&'static str],
}

/// Phase one as both participants must do it, whatever their books.
impl<P: Participant> TestServer<P> {
    /// A valid gid for this participant, unique per call.
    pub fn new_gid(&self) -> twopc::Gid {
        new_gid::<P>()
    }

    /// A yes vote for `work`, which takes `taken` from rows "0".."k-1": the branch stays
    /// prepared with those rows locked and untouched (row "k" free) until it is committed.
    pub async fn assert_yes_vote_holds_its_rows_until_commit(
        &self,
        work: Value,
        taken: &[(&str, i64)],
    ) {
        self.init(taken.len() as u32 + 1, 10).await;
        let untouched = taken.len().to_string();
        let gid = new_gid::<P>();
        let (status, vote) = self.prepare(&gid, work).await;
        assert_eq!((status, &vote), (StatusCode::OK, &yes()));

        assert_eq!(self.prepared_gids().await, vec![gid.to_string()]);
        for &(id, _) in taken {
            assert_eq!(self.balance(id).await, 10, "row {id} before the commit");
            assert!(self.is_locked(id).await, "row {id} locked");
        }
        assert!(!self.is_locked(&untouched).await);
        assert!(!marker_exists(&self.pool, &gid).await.unwrap());

        assert_eq!(
            commit_prepared(&self.pool, &gid).await.unwrap(),
            CommitResult::Committed
        );
        for &(id, amount) in taken {
            assert_eq!(self.balance(id).await, 10 - amount, "row {id}");
            assert!(!self.is_locked(id).await, "row {id} free after the commit");
        }
        assert_eq!(self.balance(&untouched).await, 10);
        assert!(marker_exists(&self.pool, &gid).await.unwrap());
        assert!(self.prepared_gids().await.is_empty());
    }

    pub async fn assert_rollback_prepared_leaves_the_books_unchanged(&self) {
        self.init(1, 10).await;
        let gid = new_gid::<P>();
        let (_, vote) = self.prepare(&gid, (self.books.take)("0", 10)).await;
        assert_eq!(vote, yes());
        assert_eq!(
            rollback_prepared(&self.pool, &gid).await.unwrap(),
            RollbackResult::RolledBack
        );
        assert_eq!(self.balance("0").await, 10);
        assert!(!marker_exists(&self.pool, &gid).await.unwrap());
        assert!(self.prepared_gids().await.is_empty());
    }

    /// Prepares `work`, which the books cannot do, and asserts a business no with `code` that
    /// leaves nothing prepared, locked or changed; returns the vote.
    pub async fn assert_business_no(&self, work: Value, code: &str) -> Value {
        let before = self.balances().await;
        let gid = new_gid::<P>();
        let (status, vote) = self.prepare(&gid, work).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(vote["vote"], "no");
        assert_eq!(vote["code"], code);
        assert_eq!(vote["business"], true);
        assert_eq!(self.balances().await, before);
        assert!(self.prepared_gids().await.is_empty());
        assert!(!marker_exists(&self.pool, &gid).await.unwrap());
        for (id, _) in &before {
            assert!(!self.is_locked(id).await, "row {id} left locked");
        }
        vote
    }

    /// Ids with quotes, backslashes, dollar quotes, comment and format marks travel as SQL
    /// text in a branch sent in one round trip (`twopc::sql`): each is taken from exactly,
    /// and refused naming itself exactly, and no other row changes.
    pub async fn assert_ids_needing_escapes_are_kept_exact(&self) {
        const AWKWARD: &[&str] = &[
            "it's",
            r"a\b",
            r"\'",
            "'); drop table twopc_markers; --",
            "$$; rollback; $$",
            r"E'\x41'",
            "ünï 😀",
            "%s %I %L",
            "\"quoted\"",
            "--",
        ];
        for id in AWKWARD {
            sqlx::query(self.books.insert)
                .bind(id)
                .bind(5_i64)
                .execute(&self.pool)
                .await
                .unwrap_or_else(|error| panic!("insert {id:?}: {error}"));
        }
        for id in AWKWARD {
            let gid = new_gid::<P>();
            let (status, vote) = self.prepare(&gid, (self.books.take)(id, 2)).await;
            assert_eq!((status, vote), (StatusCode::OK, yes()), "take from {id:?}");
            assert_eq!(
                commit_prepared(&self.pool, &gid).await.unwrap(),
                CommitResult::Committed
            );
            let (status, vote) = self
                .prepare(&new_gid::<P>(), (self.books.take)(id, 4))
                .await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(vote["vote"], "no", "{id:?}: {vote}");
            assert_eq!(vote["business"], true, "{id:?}: {vote}");
            let message = vote["message"].as_str().unwrap_or_default();
            assert!(message.contains(id), "{id:?} not named in {message:?}");
        }
        let balances = self.balances().await;
        assert_eq!(balances.len(), AWKWARD.len());
        for (id, balance) in balances {
            assert_eq!(balance, 3, "{id:?}");
        }
        assert!(self.prepared_gids().await.is_empty());
    }

    pub async fn assert_a_repeated_prepare_votes_yes_without_applying_twice(&self) {
        self.init(1, 10).await;
        let gid = new_gid::<P>();
        let work = (self.books.take)("0", 4);
        let (status, vote) = self.prepare(&gid, work.clone()).await;
        assert_eq!((status, vote), (StatusCode::OK, yes()));
        self.assert_resends_apply_nothing_twice(&gid, work).await;
        assert_eq!(
            commit_prepared(&self.pool, &gid).await.unwrap(),
            CommitResult::Committed
        );
        assert_eq!(self.balance("0").await, 6);
    }

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

    pub async fn assert_a_malformed_gid_is_refused_with_400(&self) {
        self.init(1, 10).await;
        let good = new_gid::<P>().to_string();
        let table = self.books.table;
        for gid in [
            "".to_owned(),
            "nope".to_owned(),
            format!("{good}'; drop table {table}; --"),
            good.to_uppercase(),
        ] {
            let body = serde_json::json!({
                "gid": gid,
                "deadline": twopc::Deadline::after(Duration::from_secs(1)),
                "work": (self.books.take)("0", 1),
            });
            let (status, reply) = self.post_json(twopc::wire::routes::PREPARE, &body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{gid:?}: {reply}");
        }
        assert_eq!(self.balance("0").await, 10);
        assert!(self.prepared_gids().await.is_empty());
    }

    /// An empty work and every work of `works` are refused with 400 and prepare nothing.
    pub async fn assert_malformed_works_are_refused_with_400(&self, works: Vec<Value>) {
        self.init(1, 10).await;
        for work in std::iter::once(serde_json::json!({})).chain(works) {
            let (status, reply) = self.prepare(&new_gid::<P>(), work.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{work}: {reply}");
        }
        assert_eq!(self.balance("0").await, 10);
        assert!(self.prepared_gids().await.is_empty());
    }
}

/// The tests both participants run as they are, over their own books: `$spawn` is the
/// crate's `async fn() -> TestServer<P>`. Invoked once per test binary (`prepare.rs`,
/// `api.rs`), so that each case stays a test of its own, named as here.
#[macro_export]
macro_rules! shared_branch_tests {
    ($spawn:path) => {
        #[tokio::test]
        async fn rollback_prepared_leaves_the_books_unchanged() {
            $spawn()
                .await
                .assert_rollback_prepared_leaves_the_books_unchanged()
                .await;
        }

        #[tokio::test]
        async fn a_repeated_prepare_with_the_same_gid_votes_yes_without_applying_twice() {
            $spawn()
                .await
                .assert_a_repeated_prepare_votes_yes_without_applying_twice()
                .await;
        }

        #[tokio::test]
        async fn a_row_locked_by_another_prepared_branch_makes_prepare_vote_a_transient_no() {
            $spawn()
                .await
                .assert_a_held_row_makes_prepare_vote_a_transient_no()
                .await;
        }

        #[tokio::test]
        async fn ids_needing_escapes_are_kept_exact() {
            $spawn()
                .await
                .assert_ids_needing_escapes_are_kept_exact()
                .await;
        }

        #[tokio::test]
        async fn a_malformed_gid_is_refused_with_400() {
            $spawn()
                .await
                .assert_a_malformed_gid_is_refused_with_400()
                .await;
        }
    };
}

/// The public-API tests both participants run as they are (see [`shared_branch_tests`]).
#[macro_export]
macro_rules! shared_api_tests {
    ($spawn:path) => {
        #[tokio::test]
        async fn two_hundred_concurrent_adds_of_one_lose_no_update() {
            $spawn().await.assert_concurrent_adds_lose_no_update().await;
        }

        #[tokio::test]
        async fn health_and_metrics_answer() {
            $spawn().await.assert_health_and_metrics_answer().await;
        }
    };
}
