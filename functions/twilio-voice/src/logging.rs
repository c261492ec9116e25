//! Logs as Lambda's advanced logging controls ask for them: JSON when `AWS_LAMBDA_LOG_FORMAT` is
//! `JSON`, at the level `AWS_LAMBDA_LOG_LEVEL` (else `RUST_LOG`, else INFO) names. This is what
//! `lambda_runtime`'s default subscriber does, minus per-module `RUST_LOG` directives, whose
//! filter pulls a regex engine into every bootstrap.

use std::str::FromStr;

use tracing_subscriber::filter::LevelFilter;

/// The level a setting names (`debug`, `INFO`, ...); INFO when unset or unreadable.
pub fn level(lookup: impl Fn(&str) -> Option<String>) -> LevelFilter {
    lookup("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|| lookup("RUST_LOG"))
        .and_then(|v| LevelFilter::from_str(v.trim()).ok())
        .unwrap_or(LevelFilter::INFO)
}

/// Installs the process-wide subscriber, writing to stdout for CloudWatch.
pub fn init() {
    let lookup = |name: &str| std::env::var(name).ok();
    let json = lookup("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_target(false)
        .without_time()
        .with_max_level(level(lookup));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_setting_wins_then_rust_log_then_info() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(level(env(&[])), LevelFilter::INFO);
        assert_eq!(level(env(&[("RUST_LOG", "debug")])), LevelFilter::DEBUG);
        assert_eq!(
            level(env(&[
                ("AWS_LAMBDA_LOG_LEVEL", "WARN"),
                ("RUST_LOG", "trace")
            ])),
            LevelFilter::WARN
        );
        assert_eq!(
            level(env(&[("RUST_LOG", "incoming_call=debug")])),
            LevelFilter::INFO
        );
    }
}
