//! `crud`: the cheapest requests, a read and a one-row update of the stock service, at 64
//! clients: the floor that HAProxy, axum and one PostgreSQL statement put under every route.

use reqwest::Method;

use super::{random_id, Bench};
use crate::gateway::Requests;
use crate::load::{self, Load};
use crate::report::{Report, Row};
use crate::sections::Section;

const CLIENTS: usize = 64;

/// The path of a request for a random item id.
type PathFor = fn(i64) -> String;

pub async fn run(bench: &mut Bench, report: &mut Report) -> anyhow::Result<()> {
    bench.ensure_catalog().await?;
    let rows = bench.scale.rows;
    let requests: [(&str, Method, PathFor); 2] = [
        ("GET /stock/find/{id}", Method::GET, |id| {
            format!("/stock/find/{id}")
        }),
        ("POST /stock/add/{id}/1", Method::POST, |id| {
            format!("/stock/add/{id}/1")
        }),
    ];
    for (name, method, path) in requests {
        let gateway = bench.gateway.clone();
        let load = Load {
            label: name.to_owned(),
            clients: CLIENTS,
            duration: Some(bench.scale.duration),
        };
        let stats = load::run(&load, move || {
            let gateway = gateway.clone();
            let method = method.clone();
            let path = path(random_id(rows));
            async move { Some(gateway.call(method, &path).await) }
        })
        .await?;
        report.add(Row::load(Section::Crud, name.to_owned(), CLIENTS, &stats));
    }
    Ok(())
}
