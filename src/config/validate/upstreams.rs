//! `[upstreams.NAME]`: names, addresses and their environment overrides.

use super::super::env::Overrides;
use super::super::error::Problems;
use super::super::file::FileConfig;
use super::super::model::Upstream;
use super::host_port;
use std::collections::{BTreeMap, HashMap};

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
        match host_port(&u.address) {
            Ok((host, port)) => {
                out.insert(
                    name.clone(),
                    Upstream {
                        name: name.clone(),
                        host,
                        port,
                    },
                );
            }
            Err(why) => p.add(env.label(&format!("{key}.address")), why),
        }
    }
    out
}
