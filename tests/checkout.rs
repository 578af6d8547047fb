//! Checkout through the real gateway, coordinator and participants.

use std::time::Duration;

use reqwest::StatusCode;
use system_tests::{
    assert_checkouts_exact, ledger, start, wait_nothing_prepared, Api, Consistency,
    CONSISTENCY_STOCK, CONSISTENCY_USERS,
};

#[tokio::test]
async fn order_scenario_of_the_classic_template() {
    let system = start().await;
    let api = Api::new(&system);
    let user = api.create_user().await;
    let item1 = api.create_item(10).await;
    let item2 = api.create_item(10).await;
    api.ok(&format!("/stock/add/{item1}/15")).await;
    api.ok(&format!("/stock/add/{item2}/1")).await;
    let order = api.create_order(&user).await;
    api.ok(&format!("/orders/addItem/{order}/{item1}/1")).await;
    api.ok(&format!("/orders/addItem/{order}/{item2}/1")).await;
    api.ok(&format!("/stock/subtract/{item2}/1")).await;

    // Out of stock: nothing changes, not even the other item.
    let (status, body) = api.post(&format!("/orders/checkout/{order}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(api.item(&item1).await.stock, 15);
    assert!(!api.order(&order).await.paid);

    // Out of credit.
    api.ok(&format!("/stock/add/{item2}/15")).await;
    api.ok(&format!("/payment/add_funds/{user}/15")).await;
    assert_eq!(api.checkout(&order).await, StatusCode::BAD_REQUEST);
    assert_eq!(api.item(&item1).await.stock, 15);
    assert_eq!(api.item(&item2).await.stock, 15);
    assert_eq!(api.user(&user).await.credit, 15);

    // Enough of everything.
    api.ok(&format!("/payment/add_funds/{user}/10")).await;
    assert_eq!(api.checkout(&order).await, StatusCode::OK);
    assert_eq!(api.item(&item1).await.stock, 14);
    assert_eq!(api.item(&item2).await.stock, 14);
    assert_eq!(api.user(&user).await.credit, 5);
    assert!(api.order(&order).await.paid);
    wait_nothing_prepared(&system, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn checking_out_a_paid_order_again_charges_nothing() {
    let system = start().await;
    let api = Api::new(&system);
    let user = api.create_user().await;
    api.ok(&format!("/payment/add_funds/{user}/100")).await;
    let item = api.create_item(7).await;
    api.ok(&format!("/stock/add/{item}/10")).await;
    let order = api.create_order(&user).await;
    api.ok(&format!("/orders/addItem/{order}/{item}/2")).await;
    api.ok(&format!("/orders/addItem/{order}/{item}/1")).await;

    assert_eq!(api.checkout(&order).await, StatusCode::OK);
    assert_eq!(api.checkout(&order).await, StatusCode::OK);
    assert_eq!(
        api.item(&item).await.stock,
        7,
        "quantities of one item are summed once"
    );
    assert_eq!(api.user(&user).await.credit, 100 - 21);
    // A paid order takes no more items.
    let (status, _) = api.post(&format!("/orders/addItem/{order}/{item}/1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn concurrent_checkouts_of_one_order_charge_exactly_once() {
    let system = start().await;
    let api = Api::new(&system);
    let user = api.create_user().await;
    api.ok(&format!("/payment/add_funds/{user}/1000")).await;
    let item = api.create_item(3).await;
    api.ok(&format!("/stock/add/{item}/1000")).await;
    let order = api.create_order(&user).await;
    api.ok(&format!("/orders/addItem/{order}/{item}/1")).await;

    let orders = vec![order.clone(); 20];
    let results = system_tests::run_checkouts(&api, &orders, 20).await;
    for (_, status) in &results {
        assert!(
            *status == StatusCode::OK || status.is_client_error(),
            "{status}"
        );
    }
    assert!(results.iter().any(|(_, s)| *s == StatusCode::OK));
    assert_eq!(api.user(&user).await.credit, 997);
    assert_eq!(api.item(&item).await.stock, 999);
}

#[tokio::test]
async fn an_order_without_items_checks_out_for_free() {
    let system = start().await;
    let api = Api::new(&system);
    let user = api.create_user().await;
    let order = api.create_order(&user).await;
    assert_eq!(api.checkout(&order).await, StatusCode::OK);
    assert!(api.order(&order).await.paid);
}

#[tokio::test]
async fn a_checkout_for_an_unknown_user_is_refused() {
    let system = start().await;
    let api = Api::new(&system);
    let item = api.create_item(1).await;
    api.ok(&format!("/stock/add/{item}/5")).await;
    let order = api.create_order("nobody").await;
    api.ok(&format!("/orders/addItem/{order}/{item}/1")).await;
    assert_eq!(api.checkout(&order).await, StatusCode::BAD_REQUEST);
    assert_eq!(api.item(&item).await.stock, 5);
    assert!(!api.order(&order).await.paid);
}

/// The course's consistency test: one hot item, users with several orders, 100 in flight.
#[tokio::test]
async fn consistency_scenario_is_exact() {
    let system = start().await;
    let api = Api::new(&system);
    let scenario = Consistency::populate(&api).await;
    let results = scenario.run(&api, 100).await;

    let ok = results.iter().filter(|(_, s)| *s == StatusCode::OK).count();
    let refused = results.iter().filter(|(_, s)| s.is_client_error()).count();
    assert_eq!((ok, refused), (100, 900));
    assert_eq!(api.item(&scenario.item).await.stock, 0);
    let credit = ledger(&system, CONSISTENCY_STOCK, CONSISTENCY_USERS).await;
    assert_eq!(CONSISTENCY_USERS - credit.credit_spent, 900);
    assert_checkouts_exact(
        &system,
        &api,
        &results,
        CONSISTENCY_STOCK,
        CONSISTENCY_USERS,
    )
    .await;
    wait_nothing_prepared(&system, Duration::from_secs(5)).await;
}
