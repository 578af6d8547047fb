//! A database whose prepared-transaction slots are all taken. In a test binary of its own:
//! it fills every slot of the shared test server for a moment.

mod support;

use reqwest::StatusCode;
use sqlx::Executor;
use support::{spawn_app, BOOKS};

/// SQLSTATE of `PREPARE TRANSACTION` past `max_prepared_transactions`.
const OUT_OF_MEMORY: &str = "53200";

#[tokio::test]
async fn a_full_prepared_transaction_table_makes_prepare_vote_a_transient_no() {
    let app = spawn_app().await;
    app.init(1, 10).await;
    let mut filler = app.pool.acquire().await.unwrap();
    let mut fillers = Vec::new();
    loop {
        let gid = app.new_gid().to_string();
        filler.execute("begin").await.unwrap();
        match filler
            .execute(format!("prepare transaction '{gid}'").as_str())
            .await
        {
            Ok(_) => fillers.push(gid),
            Err(error) if twopc::sqlstate::has_code(&error, OUT_OF_MEMORY) => break,
            Err(error) => panic!("filling the prepared transactions: {error}"),
        }
        assert!(
            fillers.len() < 100_000,
            "the server takes no limit on prepared transactions"
        );
    }

    let (status, vote) = app.prepare(&app.new_gid(), (BOOKS.take)("0", 4)).await;
    // Free the slots before asserting, so that a failure leaves none taken.
    for filled in &fillers {
        filler
            .execute(format!("rollback prepared '{filled}'").as_str())
            .await
            .unwrap();
    }
    assert_eq!(status, StatusCode::OK, "{vote}");
    assert_eq!(vote["vote"], "no");
    assert_eq!(vote["code"], "busy");
    assert_eq!(vote["business"], false);
    assert_eq!(app.balance("0").await, 10, "nothing charged");
    assert!(app.prepared_gids().await.is_empty());
}
