//! Phase one of the payment branch (`POST /_2pc/prepare`), finished the way the coordinator
//! finishes it: straight on the database with `twopc::finish`. What the stock branch does
//! alike is `participant_server::testing`'s; what is the payment branch's own is here.

mod support;

participant_server::shared_branch_tests!(support::spawn_app);

use reqwest::StatusCode;
use serde_json::json;
use support::{spawn_app, BOOKS};
use twopc::finish::{commit_prepared, CommitResult};

#[tokio::test]
async fn a_yes_vote_keeps_the_branch_prepared_and_the_user_locked_until_commit() {
    spawn_app()
        .await
        .assert_yes_vote_holds_its_rows_until_commit((BOOKS.take)("0", 4), &[("0", 4)])
        .await;
}

#[tokio::test]
async fn insufficient_credit_votes_no_and_leaves_nothing_prepared() {
    let app = spawn_app().await;
    app.init(1, 5).await;
    app.assert_business_no((BOOKS.take)("0", 6), "insufficient_credit")
        .await;
}

#[tokio::test]
async fn an_unknown_user_votes_no_and_leaves_nothing_prepared() {
    let app = spawn_app().await;
    app.assert_business_no((BOOKS.take)("nobody", 1), "unknown_user")
        .await;
}

#[tokio::test]
async fn a_zero_amount_for_a_known_user_votes_yes() {
    let app = spawn_app().await;
    app.init(1, 0).await;
    let gid = app.new_gid();
    let (_, vote) = app.prepare(&gid, (BOOKS.take)("0", 0)).await;
    assert_eq!(vote, json!({ "vote": "yes" }));
    assert_eq!(
        commit_prepared(&app.pool, &gid).await.unwrap(),
        CommitResult::Committed
    );
    assert_eq!(app.balance("0").await, 0);
}

#[tokio::test]
async fn malformed_work_is_refused_with_400_and_prepares_nothing() {
    spawn_app()
        .await
        .assert_malformed_works_are_refused_with_400(vec![
            json!({ "user_id": "0" }),
            json!({ "amount": 1 }),
            (BOOKS.take)("0", -1),
            json!({ "user_id": "0", "amount": "1" }),
            (BOOKS.take)("", 1),
            (BOOKS.take)(&"x".repeat(1025), 1),
            json!({ "user_id": "0", "amount": 1, "order_id": "3" }),
        ])
        .await;
}

#[tokio::test]
async fn a_batch_charges_every_member_in_one_prepared_branch_or_none_naming_who_could_not_pay() {
    let app = spawn_app().await;
    app.init(3, 10).await;
    // Users 2 and 0 both pay twice; the last member is user 0's third charge, over its credit.
    let charges = |charges: &[(&str, i64)]| -> serde_json::Value {
        charges
            .iter()
            .map(|&(id, amount)| (BOOKS.take)(id, amount))
            .collect()
    };
    let members = charges(&[("2", 4), ("0", 5), ("2", 6), ("0", 5)]);
    let gid = app.new_gid();
    let (status, vote) = app.prepare(&gid, members).await;
    assert_eq!((status, &vote), (StatusCode::OK, &json!({ "vote": "yes" })));
    assert_eq!(
        commit_prepared(&app.pool, &gid).await.unwrap(),
        CommitResult::Committed
    );
    assert_eq!(
        [
            app.balance("0").await,
            app.balance("1").await,
            app.balance("2").await
        ],
        [0, 10, 0]
    );

    // The members before the one that cannot pay are undone too.
    let refused = charges(&[("1", 3), ("0", 1), ("1", 3)]);
    let vote = app.assert_business_no(refused, "insufficient_credit").await;
    assert_eq!(vote["member"], 1, "{vote}");
}
