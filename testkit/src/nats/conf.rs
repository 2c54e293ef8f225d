//! The `nats-server` config file generated from a [`super::NatsBuilder`]: server name, the
//! `tls { .. }` and `cluster { .. }` blocks, the accounts that deliver disconnect advisories,
//! then the caller's extra text.

use std::fmt::Write as _;
use std::path::Path;

use super::NatsServer;

impl NatsServer {
    /// The config file's text; empty when the command-line flags say everything.
    pub(super) fn config_text(&self) -> String {
        let mut text = String::new();
        if let Some(name) = &self.opts.name {
            let _ = writeln!(text, "server_name: {}", quote(name));
        }
        if let Some(tls) = &self.opts.tls {
            let _ = writeln!(text, "tls {{");
            let _ = writeln!(text, "  cert_file: {}", quote_path(&tls.cert_file));
            let _ = writeln!(text, "  key_file: {}", quote_path(&tls.key_file));
            if let Some(ca) = &tls.ca_file {
                let _ = writeln!(text, "  ca_file: {}", quote_path(ca));
            }
            let _ = writeln!(text, "  verify: {}", tls.verify);
            let _ = writeln!(text, "}}");
        }
        if let Some(cluster) = &self.opts.cluster {
            let _ = writeln!(text, "cluster {{");
            let _ = writeln!(text, "  name: {}", quote(&cluster.name));
            let _ = writeln!(text, "  listen: \"127.0.0.1:{}\"", cluster.port);
            let _ = writeln!(text, "  routes: [");
            for route in &cluster.routes {
                let _ = writeln!(text, "    {}", quote(route));
            }
            let _ = writeln!(text, "  ]");
            let _ = writeln!(text, "}}");
        }
        if self.opts.advisories {
            text.push_str(&advisory_accounts(super::ADVISORY_SUBJECT));
        }
        text.push_str(&self.opts.extra_config);
        text
    }
}

/// Accounts that deliver disconnect advisories to clients: the system account `SYS` exports
/// the `APP` account's `DISCONNECT` stream, `APP` imports it as `subject`, and clients that
/// give no credentials are `APP`'s. The README shows this text.
pub fn advisory_accounts(subject: &str) -> String {
    format!(
        r#"accounts {{
  SYS {{
    users: [{{user: sys, password: sys}}]
    exports: [{{stream: "$SYS.ACCOUNT.APP.DISCONNECT"}}]
  }}
  APP {{
    users: [{{user: app, password: app}}]
    imports: [{{stream: {{account: SYS, subject: "$SYS.ACCOUNT.APP.DISCONNECT"}}, to: "{subject}"}}]
  }}
}}
system_account: SYS
no_auth_user: app
"#
    )
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn quote_path(p: &Path) -> String {
    quote(&p.to_string_lossy())
}
