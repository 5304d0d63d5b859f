//! Gateway integration tests that need real infrastructure but not the whole loop.

mod ledger;
mod reports;

use sqlx::Executor;

/// A database of its own on the PostgreSQL server of `SIGNPOST_TEST_POSTGRES_URL`, dropped by
/// [`Postgres::drop`].
pub struct Postgres {
    admin: sqlx::AnyPool,
    pub name: String,
    pub url: String,
}

impl Postgres {
    pub async fn create() -> Self {
        let admin_url = std::env::var("SIGNPOST_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        sqlx::any::install_default_drivers();
        let admin = sqlx::AnyPool::connect(&admin_url)
            .await
            .expect("PostgreSQL on SIGNPOST_TEST_POSTGRES_URL");
        let name = format!("signpost_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("SIGNPOST_TEST_POSTGRES_URL needs a database path"),
        };
        Postgres { admin, name, url }
    }

    pub async fn drop(self) {
        self.admin
            .execute(format!("DROP DATABASE {} WITH (FORCE)", self.name).as_str())
            .await
            .unwrap();
    }
}
