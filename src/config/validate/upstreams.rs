//! `[upstreams.NAME]`: names, addresses and their environment overrides.

use super::super::defaults as d;
use super::super::env::Overrides;
use super::super::error::Problems;
use super::super::file::FileConfig;
use super::super::model::Upstream;
use super::host_port;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

pub(super) fn upstreams(
    f: &FileConfig,
    env: &Overrides,
    p: &mut Problems,
) -> BTreeMap<String, Upstream> {
    let mut out = BTreeMap::new();
    let mut vars: HashMap<String, &str> = HashMap::new();
    for name in f.upstreams.keys() {
        let var = super::super::env::upstream_var(name);
        if let Some(other) = vars.insert(var.clone(), name) {
            p.add(
                format!("upstreams.{name}"),
                format!("shares its override variable {var} with upstreams.{other}; rename one"),
            );
        }
    }
    for (name, u) in &f.upstreams {
        let key = format!("upstreams.{name}");
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            p.add(&key, "upstream names use only a-z, 0-9, '_' and '-'");
            continue;
        }
        if let Some(path) = &u.health_path
            && (!path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()))
        {
            p.add(
                format!("{key}.health_path"),
                format!("{path:?} is not a path like /healthz (no spaces or control characters)"),
            );
        }
        if let Some(i) = u.health_interval
            && !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&i)
        {
            p.add(
                format!("{key}.health_interval"),
                "out of range (100ms to 1h)",
            );
        }
        match host_port(&u.address) {
            Ok((host, port)) => {
                out.insert(
                    name.clone(),
                    Upstream {
                        name: name.clone(),
                        host,
                        port,
                        health_path: u.health_path.clone(),
                        health_interval: u.health_interval.unwrap_or(d::HEALTH_INTERVAL),
                        health_checked: u.health_path.is_some() || u.health_interval.is_some(),
                    },
                );
            }
            Err(why) => p.add(env.label(&format!("{key}.address")), why),
        }
    }
    out
}
