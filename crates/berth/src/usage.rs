//! Metering: `GET /_berth/usage` (the server side) and `berth usage` (the
//! client that signs a call to it and prints the report).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use berth_api::AdminEndpoint;
use berth_client::{ClientError, Credentials, Get, ServerClient};
use berth_ecs::metering::{self, PriceTable, UsageFilter, UsageReport};
use berth_ecs::Scope;
use berth_model::{AwsError, RequestContext};
use berth_store::Store;

/// The route of the usage report.
pub const USAGE_PATH: &str = "/_berth/usage";

/// The IAM action a user or role needs (on `*`) to read the report.
pub const USAGE_ACTION: &str = "berth:GetUsage";

/// `GET /_berth/usage?cluster=…&service=…&tag=k=v&since=…&until=…`: the usage
/// report of the caller's account and region. Signed for service `ecs`.
pub struct UsageEndpoint {
    store: Arc<dyn Store>,
    prices: PriceTable,
}

impl UsageEndpoint {
    pub fn new(store: Arc<dyn Store>, prices: PriceTable) -> Self {
        UsageEndpoint { store, prices }
    }
}

/// The usage endpoint for `berth up`, with the prices of `--fargate-prices`
/// (Fargate's us-east-1 prices without one).
pub fn endpoint(
    store: Arc<dyn Store>,
    prices: Option<&Path>,
) -> anyhow::Result<Arc<dyn AdminEndpoint>> {
    let prices = match prices {
        Some(path) => PriceTable::load(path)?,
        None => PriceTable::default(),
    };
    Ok(Arc::new(UsageEndpoint::new(store, prices)))
}

fn invalid(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("InvalidParameterException", message)
}

/// Reads the endpoint's query parameters into a filter.
pub fn parse_filter(query: &[(String, String)], now: f64) -> Result<UsageFilter, AwsError> {
    let mut filter = UsageFilter::default();
    let time = |name: &str, value: &str| {
        metering::parse_time(value, now).ok_or_else(|| {
            invalid(format!(
                "{name} '{value}' is not a time: use seconds since the epoch, \
                 2024-05-01T12:00:00Z, 2024-05-01, or a duration ago such as 24h."
            ))
        })
    };
    for (name, value) in query {
        match name.as_str() {
            "cluster" if !value.is_empty() => filter.cluster = Some(value.clone()),
            "service" if !value.is_empty() => filter.service = Some(value.clone()),
            "tag" => match value.split_once('=') {
                Some((k, v)) if !k.is_empty() => filter.tags.push((k.to_string(), v.to_string())),
                _ => return Err(invalid(format!("tag '{value}' must be key=value."))),
            },
            "since" => filter.since = Some(time("since", value)?),
            "until" => filter.until = Some(time("until", value)?),
            "cluster" | "service" => {
                return Err(invalid(format!("{name} cannot be empty.")));
            }
            other => {
                return Err(invalid(format!(
                    "Unknown parameter '{other}'. Valid parameters: cluster, service, tag, since, until."
                )))
            }
        }
    }
    Ok(filter)
}

impl AdminEndpoint for UsageEndpoint {
    fn path(&self) -> &'static str {
        USAGE_PATH
    }

    fn signing_name(&self) -> &'static str {
        "ecs"
    }

    fn action(&self) -> &'static str {
        USAGE_ACTION
    }

    fn get(
        &self,
        ctx: &RequestContext,
        query: &[(String, String)],
    ) -> Result<serde_json::Value, AwsError> {
        let now = berth_util::time::now_epoch();
        let filter = parse_filter(query, now)?;
        let report = metering::usage(
            self.store.as_ref(),
            &Scope::of(ctx),
            &filter,
            &self.prices,
            now,
        )?;
        serde_json::to_value(&report)
            .map_err(|e| AwsError::internal(format!("The usage report could not be encoded: {e}")))
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct UsageArgs {
    /// The Berth server.
    #[arg(
        long,
        default_value = "http://127.0.0.1:4566",
        env = "AWS_ENDPOINT_URL",
        value_name = "URL"
    )]
    pub endpoint: String,

    /// The region whose tasks to report (the request is signed for it).
    #[arg(
        long,
        default_value = "us-east-1",
        env = "AWS_DEFAULT_REGION",
        value_name = "REGION"
    )]
    pub region: String,

    /// Only this cluster (name or ARN).
    #[arg(long, value_name = "CLUSTER")]
    pub cluster: Option<String>,

    /// Only tasks of this service (name or ARN).
    #[arg(long, value_name = "SERVICE")]
    pub service: Option<String>,

    /// Only tasks with this tag; repeat to require several.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,

    /// Only tasks billed at or after this time: epoch seconds,
    /// 2024-05-01T12:00:00Z, 2024-05-01, or a duration ago (90m, 24h, 7d).
    /// A task counts whole when its billed time overlaps the window.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,

    /// Only tasks billed before this time (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,

    /// Print the report as JSON instead of tables.
    #[arg(long)]
    pub json: bool,

    #[arg(
        long,
        env = "AWS_ACCESS_KEY_ID",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub access_key_id: Option<String>,

    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub secret_access_key: Option<String>,

    #[arg(
        long,
        env = "AWS_SESSION_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub session_token: Option<String>,

    /// Read root keys from this data directory's `credentials` file when
    /// AWS_ACCESS_KEY_ID is unset [default: berth up's data directory].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// The `[berth]` profile of `<data-dir>/credentials`, as `berth up` wrote it.
fn keys_from_data_dir(dir: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(dir.join("credentials")).ok()?;
    crate::credentials::parse_profile(&text)
}

fn default_data_dir() -> Option<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(xdg).join("berth"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share/berth"))
}

/// The query parameters of `args`' filters.
fn query_pairs(args: &UsageArgs) -> Vec<(&'static str, &str)> {
    let mut pairs = Vec::new();
    for (name, value) in [
        ("cluster", &args.cluster),
        ("service", &args.service),
        ("since", &args.since),
        ("until", &args.until),
    ] {
        if let Some(value) = value {
            pairs.push((name, value.as_str()));
        }
    }
    for tag in &args.tags {
        pairs.push(("tag", tag.as_str()));
    }
    pairs
}

pub async fn run(args: UsageArgs) -> anyhow::Result<()> {
    let report = fetch(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// Calls `GET /_berth/usage` with `args`' filters, signed.
pub async fn fetch(args: &UsageArgs) -> anyhow::Result<UsageReport> {
    for tag in &args.tags {
        if tag.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
            bail!("--tag expects key=value, got '{tag}'");
        }
    }
    let (access_key_id, secret_access_key, session_token) =
        match (&args.access_key_id, &args.secret_access_key) {
            (Some(id), Some(secret)) => (id.clone(), secret.clone(), args.session_token.clone()),
            (None, None) => {
                let dir = args.data_dir.clone().or_else(default_data_dir);
                let keys = dir.as_deref().and_then(keys_from_data_dir);
                let Some((id, secret)) = keys else {
                    bail!(
                        "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                         (berth up prints them), or pass --data-dir of the server"
                    );
                };
                (id, secret, None)
            }
            _ => bail!("set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither"),
        };
    if !args.endpoint.starts_with("http://") {
        bail!(
            "--endpoint must be an http:// URL (got '{}')",
            args.endpoint
        );
    }
    let client = ServerClient::new(&args.endpoint, &args.region)
        .with_context(|| format!("invalid endpoint URL '{}'", args.endpoint))?;
    let credentials = Credentials {
        access_key_id,
        secret_access_key,
    };
    let query = query_pairs(args);
    let get = Get {
        query: &query,
        session_token: session_token.as_deref(),
        ..Get::new(USAGE_PATH, "ecs")
    };
    match client
        .get::<UsageReport>(&credentials, get, Duration::from_secs(60))
        .await
    {
        Ok(report) => Ok(report),
        Err(ClientError::Api {
            status,
            code,
            message,
        }) => {
            let status = hyper::StatusCode::from_u16(status)
                .map_or_else(|_| status.to_string(), |s| s.to_string());
            bail!("{code} ({status}): {message}")
        }
        Err(e @ ClientError::Protocol(_)) => {
            Err(anyhow::anyhow!(e).context("the server's answer is not a usage report"))
        }
        Err(e) => Err(anyhow::anyhow!(e).context(format!("calling {}", args.endpoint))),
    }
}

fn cost(c: f64) -> String {
    format!("${c:.8}")
}

/// A plain-text table: columns padded to their widest cell, numbers right-aligned.
fn table(header: &[&str], rows: &[Vec<String>], right_from: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            if i >= right_from {
                out.push_str(&format!("{cell:>w$}"));
            } else {
                out.push_str(&format!("{cell:<w$}"));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn totals_cells(t: &berth_ecs::metering::UsageTotals) -> Vec<String> {
    vec![
        t.tasks.to_string(),
        t.billed_seconds.to_string(),
        format!("{:.2}", t.vcpu_seconds),
        format!("{:.2}", t.gb_seconds),
        format!("{:.2}", t.storage_gb_seconds),
        cost(t.cost),
    ]
}

/// The report as `berth usage` prints it.
pub fn render(report: &UsageReport) -> String {
    let mut out = String::new();
    let rows: Vec<Vec<String>> = report
        .tasks
        .iter()
        .map(|line| {
            let m = &line.metered;
            let task = m.task_arn.rsplit('/').next().unwrap_or(&m.task_arn);
            vec![
                m.cluster.clone(),
                task.to_string(),
                m.service.clone().unwrap_or_else(|| "-".into()),
                if line.running {
                    format!("{}*", m.provider)
                } else {
                    m.provider.clone()
                },
                m.billed_seconds.to_string(),
                format!("{:.2}", m.vcpu_seconds),
                format!("{:.2}", m.gb_seconds),
                format!("{:.2}", m.storage_gb_seconds),
                cost(line.cost),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "CLUSTER",
            "TASK",
            "SERVICE",
            "PROVIDER",
            "BILLED S",
            "VCPU-S",
            "GB-S",
            "STORAGE GB-S",
            "COST",
        ],
        &rows,
        4,
    ));
    if report.tasks.iter().any(|l| l.running) {
        out.push_str("* still running: metered up to now\n");
    }
    let head = [
        "TASKS",
        "BILLED S",
        "VCPU-S",
        "GB-S",
        "STORAGE GB-S",
        "COST",
    ];
    let with = |first: &[&str], rest: &[&str]| -> Vec<String> {
        first.iter().chain(rest).map(|s| s.to_string()).collect()
    };
    let rows: Vec<Vec<String>> = report
        .by_cluster
        .iter()
        .map(|c| {
            let mut row = vec![c.cluster.clone()];
            row.extend(totals_cells(&c.totals));
            row
        })
        .collect();
    out.push('\n');
    let header = with(&["CLUSTER"], &head);
    out.push_str(&table(
        &header.iter().map(String::as_str).collect::<Vec<_>>(),
        &rows,
        1,
    ));
    if !report.by_service.is_empty() {
        let rows: Vec<Vec<String>> = report
            .by_service
            .iter()
            .map(|s| {
                let mut row = vec![s.cluster.clone(), s.service.clone()];
                row.extend(totals_cells(&s.totals));
                row
            })
            .collect();
        out.push('\n');
        let header = with(&["CLUSTER", "SERVICE"], &head);
        out.push_str(&table(
            &header.iter().map(String::as_str).collect::<Vec<_>>(),
            &rows,
            2,
        ));
    }
    out.push_str(&format!(
        "\nTOTAL  {} tasks  {} billed s  {:.2} vCPU-s  {:.2} GB-s  {:.2} storage GB-s  {} {}\n",
        report.total.tasks,
        report.total.billed_seconds,
        report.total.vcpu_seconds,
        report.total.gb_seconds,
        report.total.storage_gb_seconds,
        cost(report.total.cost),
        report.currency,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_ecs::metering::{Metered, UsageLine, UsageTotals};

    #[test]
    fn filters_from_the_query() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let f = parse_filter(
            &q(&[
                ("cluster", "demo"),
                ("service", "web"),
                ("tag", "team=a=b"),
                ("tag", "env="),
                ("since", "1h"),
                ("until", "2024-05-01"),
            ]),
            10_000.0,
        )
        .unwrap();
        assert_eq!(f.cluster.as_deref(), Some("demo"));
        assert_eq!(f.service.as_deref(), Some("web"));
        assert_eq!(
            f.tags,
            vec![("team".into(), "a=b".into()), ("env".into(), "".into())]
        );
        assert_eq!(f.since, Some(6_400.0));
        assert_eq!(f.until, Some(1_714_521_600.0));
        assert!(parse_filter(&q(&[("tag", "novalue")]), 0.0).is_err());
        assert!(parse_filter(&q(&[("since", "soon")]), 0.0).is_err());
        assert!(parse_filter(&q(&[("clusters", "x")]), 0.0).is_err());
    }

    #[test]
    fn renders_tables() {
        let metered = Metered {
            task_arn: "arn:aws:ecs:us-east-1:000000000000:task/default/abc".into(),
            cluster: "default".into(),
            service: Some("web".into()),
            provider: "FARGATE".into(),
            launch_type: "FARGATE".into(),
            tags: Default::default(),
            started_at: 0.0,
            stopped_at: Some(90.0),
            billed_seconds: 90,
            vcpu: 0.25,
            gb: 0.5,
            storage_gb: 20.0,
            vcpu_seconds: 22.5,
            gb_seconds: 45.0,
            storage_gb_seconds: 0.0,
        };
        let totals = UsageTotals {
            tasks: 1,
            billed_seconds: 90,
            vcpu_seconds: 22.5,
            gb_seconds: 45.0,
            storage_gb_seconds: 0.0,
            cost: 0.000_308_562_5,
        };
        let report = UsageReport {
            generated_at: 100.0,
            currency: "USD".into(),
            tasks: vec![UsageLine {
                metered,
                running: false,
                cost: 0.000_308_562_5,
            }],
            by_cluster: vec![berth_ecs::metering::ClusterUsage {
                cluster: "default".into(),
                totals: totals.clone(),
            }],
            by_service: vec![berth_ecs::metering::ServiceUsage {
                cluster: "default".into(),
                service: "web".into(),
                totals: totals.clone(),
            }],
            by_tag: vec![],
            total: totals,
        };
        let text = render(&report);
        assert!(text.contains("abc"), "{text}");
        assert!(text.contains("22.50"), "{text}");
        assert!(text.contains("$0.00030856"), "{text}");
        assert!(text.contains("TOTAL  1 tasks"), "{text}");
    }

    /// `berth usage` against a gateway serving the endpoint, end to end.
    #[tokio::test]
    async fn the_client_signs_and_reads_the_report() {
        use berth_api::{GatewayBuilder, ResolvedCredential, StaticCredentials};
        use berth_model::{Principal, PrincipalKind};
        use berth_store::{Op, SqliteOptions, SqliteStore, StoreExt};

        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("s.db"))).unwrap());
        // A FARGATE task that ran 90 s at 0.25 vCPU / 0.5 GB.
        let scope = Scope {
            account: "000000000000".into(),
            region: "us-east-1".into(),
        };
        let record = berth_ecs::TaskRecord {
            id: "t1".into(),
            cluster: "demo".into(),
            task: berth_model::shapes::ecs::Task {
                task_arn: Some("arn:aws:ecs:us-east-1:000000000000:task/demo/t1".into()),
                cpu: Some("256".into()),
                memory: Some("512".into()),
                launch_type: Some("FARGATE".into()),
                capacity_provider_name: Some("FARGATE".into()),
                group: Some("service:web".into()),
                last_status: Some("STOPPED".into()),
                pull_started_at: Some(1_700_000_000.0),
                stopped_at: Some(1_700_000_090.0),
                ..Default::default()
            },
            ..Default::default()
        };
        let line: Op = metering::ledger_op(&scope, &record).unwrap().unwrap();
        store
            .update(move |_| Ok::<_, AwsError>((vec![line.clone()], ())))
            .await
            .unwrap()
            .unwrap();
        let credentials = Arc::new(StaticCredentials::new());
        credentials.insert(ResolvedCredential {
            secret_access_key: "secret".into(),
            session_token: None,
            expires_at: None,
            principal: Principal {
                kind: PrincipalKind::Root,
                arn: "arn:aws:iam::000000000000:root".into(),
                user_id: "000000000000".into(),
                account_id: "000000000000".into(),
                access_key_id: "AKIAUSAGETEST".into(),
            },
        });
        let gateway = GatewayBuilder::new(store.clone(), "test")
            .credentials(credentials)
            .admin_endpoint(endpoint(store.clone(), None).unwrap())
            .build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, gateway.router()).await.unwrap();
        });
        let args = |service: &str, tags: Vec<String>| UsageArgs {
            endpoint: format!("http://{address}"),
            region: "us-east-1".into(),
            cluster: Some("demo".into()),
            service: Some(service.into()),
            tags,
            since: Some("2023-11-14T00:00:00Z".into()),
            until: None,
            json: false,
            access_key_id: Some("AKIAUSAGETEST".into()),
            secret_access_key: Some("secret".into()),
            session_token: None,
            data_dir: None,
        };
        let report = fetch(&args("web", vec![])).await.unwrap();
        assert_eq!(report.total.tasks, 1);
        assert_eq!(report.total.billed_seconds, 90);
        assert_eq!(report.total.vcpu_seconds, 22.5);
        assert_eq!(report.total.gb_seconds, 45.0);
        assert!((report.total.cost - 0.000_308_562_5).abs() < 1e-12);
        let text = render(&report);
        assert!(text.contains("$0.00030856"), "{text}");
        println!("{text}");
        let none = fetch(&args("other service", vec!["a b=c d".into()]))
            .await
            .unwrap();
        assert_eq!(none.total.tasks, 0);
        let mut wrong = args("web", vec![]);
        wrong.secret_access_key = Some("wrong".into());
        let e = fetch(&wrong).await.unwrap_err().to_string();
        assert!(e.starts_with("InvalidSignatureException (403"), "{e}");
        server.abort();
    }
}
