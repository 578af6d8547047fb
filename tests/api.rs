//! The public API through the real gateway: the classic template's scenarios, bad input on
//! every route, lost updates, internal routes hidden, and instances killed under load.

use std::time::Duration;

use reqwest::StatusCode;
use system_tests::{start, Api, Service};

#[tokio::test]
async fn stock_and_payment_scenarios_of_the_classic_template() {
    let system = start().await;
    let api = Api::new(&system);

    let item = api.create_item(5).await;
    assert_eq!(
        api.item(&item).await,
        system_tests::Item { stock: 0, price: 5 }
    );
    api.ok(&format!("/stock/add/{item}/50")).await;
    let (status, _) = api.post(&format!("/stock/subtract/{item}/200")).await;
    assert!(status.is_client_error(), "subtract below zero: {status}");
    api.ok(&format!("/stock/subtract/{item}/15")).await;
    assert_eq!(api.item(&item).await.stock, 35);

    let user = api.create_user().await;
    assert_eq!(api.user(&user).await.credit, 0);
    api.ok(&format!("/payment/add_funds/{user}/15")).await;
    let (status, _) = api.post(&format!("/payment/pay/{user}/100")).await;
    assert!(status.is_client_error(), "pay beyond credit: {status}");
    api.ok(&format!("/payment/pay/{user}/10")).await;
    let found = api.user(&user).await;
    assert_eq!((found.user_id.as_str(), found.credit), (user.as_str(), 5));

    let order = api.create_order(&user).await;
    api.ok(&format!("/orders/addItem/{order}/{item}/2")).await;
    api.ok(&format!("/orders/addItem/{order}/{item}/1")).await;
    let found = api.order(&order).await;
    assert_eq!(found.items, vec![(item.clone(), 2), (item.clone(), 1)]);
    assert_eq!((found.total_cost, found.paid), (15, false));
    assert_eq!(found.user_id, user);
}

#[tokio::test]
async fn batch_init_creates_numbered_rows_usable_everywhere() {
    let system = start().await;
    let api = Api::new(&system);
    api.ok("/stock/batch_init/10/100/3").await;
    api.ok("/payment/batch_init/10/50").await;
    api.ok("/orders/batch_init/10/10/10/3").await;
    assert_eq!(
        api.item("9").await,
        system_tests::Item {
            stock: 100,
            price: 3
        }
    );
    assert_eq!(api.user("9").await.credit, 50);
    let order = api.order("9").await;
    assert_eq!(order.total_cost, 6);
    assert_eq!(order.items.len(), 2);
    assert!(!order.paid);
    assert_eq!(api.checkout("9").await, StatusCode::OK);
    assert!(api.order("9").await.paid);
}

/// Every route with every kind of bad value: a 4xx, and nothing written.
#[tokio::test]
async fn bad_input_on_every_route_gets_a_4xx_and_changes_nothing() {
    let system = start().await;
    let api = Api::new(&system);
    let item = api.create_item(5).await;
    api.ok(&format!("/stock/add/{item}/10")).await;
    let user = api.create_user().await;
    api.ok(&format!("/payment/add_funds/{user}/10")).await;
    let order = api.create_order(&user).await;
    api.ok(&format!("/orders/addItem/{order}/{item}/1")).await;

    let long = "9".repeat(1500);
    let bad_numbers = [
        "abc",
        "-1",
        "1.5",
        "9223372036854775808",
        "99999999999999999999999",
        long.as_str(),
        "%20",
    ];
    let mut posts: Vec<String> = Vec::new();
    for n in bad_numbers {
        posts.push(format!("/stock/item/create/{n}"));
        posts.push(format!("/stock/add/{item}/{n}"));
        posts.push(format!("/stock/subtract/{item}/{n}"));
        posts.push(format!("/stock/batch_init/{n}/1/1"));
        posts.push(format!("/payment/add_funds/{user}/{n}"));
        posts.push(format!("/payment/pay/{user}/{n}"));
        posts.push(format!("/payment/batch_init/{n}/1"));
        posts.push(format!("/orders/addItem/{order}/{item}/{n}"));
        posts.push(format!("/orders/batch_init/{n}/1/1/1"));
        posts.push(format!("/orders/batch_init/1/1/1/{n}"));
    }
    // Zero where it means nothing.
    posts.push(format!("/stock/add/{item}/0"));
    posts.push(format!("/stock/subtract/{item}/0"));
    posts.push(format!("/payment/add_funds/{user}/0"));
    posts.push(format!("/payment/pay/{user}/0"));
    posts.push(format!("/orders/addItem/{order}/{item}/0"));
    posts.push("/stock/batch_init/0/1/1".to_owned());
    for unknown in ["no-such-id", long.as_str()] {
        posts.push(format!("/stock/add/{unknown}/1"));
        posts.push(format!("/stock/subtract/{unknown}/1"));
        posts.push(format!("/payment/add_funds/{unknown}/1"));
        posts.push(format!("/payment/pay/{unknown}/1"));
        posts.push(format!("/orders/addItem/{unknown}/{item}/1"));
        posts.push(format!("/orders/addItem/{order}/{unknown}/1"));
        posts.push(format!("/orders/checkout/{unknown}"));
    }
    // Overflow and going below zero.
    posts.push(format!("/stock/add/{item}/{}", i64::MAX));
    posts.push(format!("/payment/add_funds/{user}/{}", i64::MAX));
    posts.push(format!("/stock/subtract/{item}/11"));
    posts.push(format!("/payment/pay/{user}/11"));
    posts.push(format!("/orders/addItem/{order}/{item}/{}", i64::MAX));
    // Missing segments.
    posts.push("/stock/add//1".to_owned());
    posts.push("/orders/checkout/".to_owned());

    for path in &posts {
        let (status, body) = api.post(path).await;
        assert!(
            status.is_client_error(),
            "POST {}: {status} {body}",
            &path[..path.len().min(120)]
        );
    }
    for path in [
        format!("/stock/find/{long}"),
        "/stock/find/no-such-id".to_owned(),
        "/payment/find_user/no-such-id".to_owned(),
        "/orders/find/no-such-id".to_owned(),
        "/stock/nowhere".to_owned(),
    ] {
        let (status, _) = api.get(&path).await;
        assert!(
            status.is_client_error(),
            "GET {}: {status}",
            &path[..path.len().min(120)]
        );
    }
    // Wrong methods.
    let (status, _) = api.get(&format!("/stock/add/{item}/1")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = api.post(&format!("/stock/find/{item}")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    assert_eq!(api.item(&item).await.stock, 10);
    assert_eq!(api.user(&user).await.credit, 10);
    let found = api.order(&order).await;
    assert_eq!(
        (found.items.len(), found.total_cost, found.paid),
        (1, 5, false)
    );
    let items =
        system_tests::scalar_i64(&system, Service::Stock, "select count(*) from items").await;
    assert_eq!(items, 1, "no item was created by bad input");
}

#[tokio::test]
async fn two_hundred_concurrent_updates_of_one_row_lose_nothing() {
    let system = start().await;
    let api = Api::new(&system);
    let item = api.create_item(1).await;
    let user = api.create_user().await;
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let api = api.clone();
        let (item, user) = (item.clone(), user.clone());
        requests.spawn(async move {
            api.ok(&format!("/stock/add/{item}/1")).await;
            api.ok(&format!("/payment/add_funds/{user}/1")).await;
        });
    }
    while let Some(done) = requests.join_next().await {
        done.expect("request task");
    }
    assert_eq!(api.item(&item).await.stock, 200);
    assert_eq!(api.user(&user).await.credit, 200);

    // And concurrent subtracts never go below zero.
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let api = api.clone();
        let item = item.clone();
        requests.spawn(async move { api.post(&format!("/stock/subtract/{item}/1")).await.0 });
    }
    let mut ok = 0;
    while let Some(status) = requests.join_next().await {
        let status = status.expect("request task");
        assert!(
            status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
            "{status}"
        );
        ok += usize::from(status == StatusCode::OK);
    }
    assert_eq!(ok, 200);
    assert_eq!(api.item(&item).await.stock, 0);
}

#[tokio::test]
async fn internal_routes_are_not_reachable_through_the_gateway() {
    let system = start().await;
    let api = Api::new(&system);
    for path in [
        "/_2pc/prepare",
        "/_2pc/transactions",
        "/metrics",
        "/health",
        "/stock/../_2pc/prepare",
    ] {
        let (status, _) = api.post(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "POST {path}");
        let (status, _) = api.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "GET {path}");
    }
}

/// Kills one instance of each service while clients keep sending requests: once HAProxy has
/// noticed, no request fails.
#[tokio::test]
async fn killing_one_instance_of_each_service_fails_no_request_after_haproxy_notices() {
    let system = start().await;
    let api = Api::new(&system);
    let item = api.create_item(1).await;
    api.ok(&format!("/stock/add/{item}/1000000")).await;
    let user = api.create_user().await;
    api.ok(&format!("/payment/add_funds/{user}/1000000")).await;

    for service in [Service::Stock, Service::Payment, Service::Order] {
        let victim = service.instance_process(1);
        system.supervisor().pause_restarts(&victim).expect("pause");
        system.kill(&victim).expect("kill");
        // Wait until the gateway stops routing to it: twenty successes in a row.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let mut in_a_row = 0;
        while in_a_row < 20 {
            assert!(
                std::time::Instant::now() < deadline,
                "gateway kept failing after {victim} died"
            );
            let probe = match service {
                Service::Stock => "/stock/find/probe",
                Service::Payment => "/payment/find_user/probe",
                _ => "/orders/find/probe",
            };
            let (status, _) = api.get(probe).await;
            // Unknown ids answer 400 from a live instance; a dead one would give 5xx.
            if status.is_client_error() {
                in_a_row += 1
            } else {
                in_a_row = 0
            }
        }
        // Now every request of every kind succeeds.
        for _ in 0..30 {
            api.ok(&format!("/stock/add/{item}/1")).await;
            api.ok(&format!("/payment/add_funds/{user}/1")).await;
            let order = api.create_order(&user).await;
            api.ok(&format!("/orders/addItem/{order}/{item}/1")).await;
            assert_eq!(api.checkout(&order).await, StatusCode::OK);
        }
        system.start_process(&victim).expect("restart");
        system
            .supervisor()
            .wait_running(&victim, Duration::from_secs(10))
            .expect("running again");
    }
}

/// Every metric family that any service exports says what it is: a `# HELP` line beside its
/// `# TYPE` line, after a checkout has made every kind of service record something.
#[tokio::test]
async fn every_metric_of_every_service_has_help_and_type() {
    let system = start().await;
    let api = Api::new(&system);
    let item = api.create_item(1).await;
    api.ok(&format!("/stock/add/{item}/1")).await;
    let user = api.create_user().await;
    api.ok(&format!("/payment/add_funds/{user}/1")).await;
    let order = api.create_order(&user).await;
    api.ok(&format!("/orders/addItem/{order}/{item}/1")).await;
    assert_eq!(api.checkout(&order).await, StatusCode::OK);

    for service in Service::ALL {
        for process in system.processes(service) {
            let base = system.instance_url(&process).expect("instance url");
            let text = api
                .http
                .get(format!("{base}/metrics"))
                .send()
                .await
                .and_then(|response| response.error_for_status())
                .expect("GET /metrics")
                .text()
                .await
                .expect("metrics body");
            let described = |kind: &str| -> std::collections::BTreeSet<String> {
                text.lines()
                    .filter_map(|line| line.strip_prefix(kind))
                    .filter_map(|rest| rest.split_whitespace().next())
                    .map(str::to_owned)
                    .collect()
            };
            let typed = described("# TYPE ");
            let helped = described("# HELP ");
            assert!(!typed.is_empty(), "{process}: no metric on /metrics");
            let missing: Vec<_> = typed.difference(&helped).collect();
            assert!(missing.is_empty(), "{process}: no # HELP for {missing:?}");
        }
    }
}
