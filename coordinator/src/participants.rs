//! The participants this coordinator drives: a vote endpoint and a database each.

use std::{collections::HashMap, sync::Arc, time::Duration};

use service_kit::peers::Peers;
use sqlx::PgPool;

use crate::config::ParticipantSpec;

/// One participant as the coordinator reaches it: its instances and its database.
pub struct ParticipantDb {
    pub name: String,
    /// The instances votes are asked of (none for the recovery CLI, which never asks).
    pub instances: Arc<Peers>,
    /// The participant's own database: phase two and recovery finish branches here.
    pub pool: PgPool,
}

#[derive(Clone, Default)]
pub struct Participants {
    by_name: HashMap<String, Arc<ParticipantDb>>,
    /// Configuration order, used for reports.
    order: Vec<Arc<ParticipantDb>>,
}

impl Participants {
    /// Opens a lazy pool per participant database: the coordinator starts (and recovers what it
    /// can) even while a participant database is down.
    pub fn connect(specs: &[ParticipantSpec], max_connections: u32) -> Result<Self, sqlx::Error> {
        let mut participants = Self::default();
        for spec in specs {
            let options: sqlx::postgres::PgConnectOptions = spec.database_url.parse()?;
            let pool = service_kit::db::pool_options(max_connections, Duration::from_secs(5))
                .connect_lazy_with(sqlx::ConnectOptions::disable_statement_logging(options));
            let participant = Arc::new(ParticipantDb {
                name: spec.name.clone(),
                instances: Arc::new(Peers::new(&spec.name, spec.base_urls.clone())),
                pool,
            });
            participants
                .by_name
                .insert(spec.name.clone(), participant.clone());
            participants.order.push(participant);
        }
        Ok(participants)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<ParticipantDb>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<ParticipantDb>> {
        self.order.iter()
    }
}
