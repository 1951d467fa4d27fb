//! Secrets kept out of the config file: each secret key has a `_file`
//! twin naming a file that holds it (a mounted Kubernetes or Docker
//! secret). The files are read before validation, so the secret is checked
//! as if written in place, and an error points at the `_file` key.

use std::collections::BTreeMap;

use toml::Spanned;

use super::super::cx::Cx;
use super::super::raw::{RawConfig, Secrets, Text};
use super::super::ConfigError;

/// What a Kafka property's name ends with when its value is in a file.
const FILE_SUFFIX: &str = "_file";

impl Cx<'_> {
    /// Fills each secret from its `_file` twin, if that is given.
    pub(super) fn read_secret_files(&self, raw: &mut RawConfig) -> Result<(), ConfigError> {
        let server = &mut raw.server;
        self.fill(
            &mut server.events_link_secret,
            server.events_link_secret_file.take(),
            "events_link_secret",
        )?;
        self.fill(&mut raw.store.url, raw.store.url_file.take(), "url")?;
        self.fill(&mut raw.admin.token, raw.admin.token_file.take(), "token")?;
        self.fill_secrets(
            &mut raw.webhooks.secret,
            raw.webhooks.secret_file.take(),
            "secret",
        )?;
        for route in &mut raw.routes {
            self.fill_secrets(
                &mut route.webhook_secret,
                route.webhook_secret_file.take(),
                "webhook_secret",
            )?;
        }
        if let Some(kafka) = &mut raw.kafka {
            self.fill_properties(&mut kafka.get_mut().properties)?;
        }
        Ok(())
    }

    /// A single-value secret: the file's first line.
    fn fill(
        &self,
        value: &mut Option<Text>,
        file: Option<Text>,
        key: &str,
    ) -> Result<(), ConfigError> {
        self.fill_with(value, file, key, |text| {
            text.lines().next().unwrap_or_default().trim().to_owned()
        })
    }

    /// Webhook signing secrets: one per line of the file.
    fn fill_secrets(
        &self,
        value: &mut Option<Spanned<Secrets>>,
        file: Option<Text>,
        key: &str,
    ) -> Result<(), ConfigError> {
        self.fill_with(value, file, key, |text| {
            Secrets::Many(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )
        })
    }

    /// Sets `value` to what `read` makes of the text of `file`, if given;
    /// the key and its twin together are refused.
    fn fill_with<T>(
        &self,
        value: &mut Option<Spanned<T>>,
        file: Option<Text>,
        key: &str,
        read: impl FnOnce(&str) -> T,
    ) -> Result<(), ConfigError> {
        let Some(file) = file else { return Ok(()) };
        if value.is_some() {
            return Err(self.err(file.span(), format!("give {key} or {key}_file, not both")));
        }
        let text = self.read(&file)?;
        *value = Some(Spanned::new(file.span(), read(&text)));
        Ok(())
    }

    /// `"sasl.password_file" = "/run/secrets/kafka"` gives `sasl.password`.
    fn fill_properties(&self, properties: &mut BTreeMap<String, Text>) -> Result<(), ConfigError> {
        let files: Vec<String> = properties
            .keys()
            .filter(|k| k.ends_with(FILE_SUFFIX))
            .cloned()
            .collect();
        for key in files {
            let file = properties.remove(&key).expect("listed above");
            let name = key.trim_end_matches(FILE_SUFFIX).to_owned();
            if properties.contains_key(&name) {
                return Err(self.err(file.span(), format!("give {name} or {key}, not both")));
            }
            let text = self.read(&file)?;
            properties.insert(name, Spanned::new(file.span(), text));
        }
        Ok(())
    }

    /// The file's text, its trailing newline and spaces dropped.
    fn read(&self, file: &Text) -> Result<String, ConfigError> {
        std::fs::read_to_string(file.get_ref())
            .map(|text| text.trim_end().to_owned())
            .map_err(|e| {
                self.err(
                    file.span(),
                    format!("cannot read `{}`: {e}", file.get_ref()),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{parse, refused, route};

    #[test]
    fn every_secret_may_come_from_a_file_its_twin_names() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let secrets = file(
            "hooks",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n\nwhsec_dGVuYW50LW9sZC1zZWNyZXQtb2YtMzItYnl0ZXMhIQ==\n",
        );
        let url = file("url", "redis://:pw@127.0.0.1:6379/0\n");
        let link = file("link", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n");
        let token = file("token", "0123456789abcdef0123\n");
        let text = format!(
            "[server]\nevents_link_secret_file = \"{link}\"\n\
             [store]\nkind = \"redis\"\nurl_file = \"{url}\"\n\
             [admin]\ntoken_file = \"{token}\"\n\
             [webhooks]\nsecret_file = \"{secrets}\"\n{}\
             callback_hosts = [\"hooks.example.com\"]\nwebhook_secret_file = \"{secrets}\"\n",
            route("")
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.webhooks.secrets.len(), 2, "one per line");
        assert_eq!(config.routes[0].webhook_secrets.as_ref().unwrap().len(), 2);
        assert_eq!(
            config.store.redis.unwrap().seeds,
            ["redis://:pw@127.0.0.1:6379/0"]
        );
        assert!(config.server.events_link_secret.is_some());
        assert!(config.admin_token.is_some());
        refused(
            "[store]\nkind = \"redis\"\nurl_file = \"/nonexistent/url\"\n",
            "3: store.url_file",
            "cannot read `/nonexistent/url`",
        );
        refused(
            &format!("[webhooks]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nsecret_file = \"{secrets}\"\n"),
            "3: webhooks.secret_file",
            "give secret or secret_file, not both",
        );
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn a_kafka_property_may_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret\n").unwrap();
        let text = format!(
            "[kafka]\nbrokers = [\"127.0.0.1:9092\"]\n[kafka.properties]\n\"sasl.password_file\" = \"{}\"\n",
            path.display()
        );
        let config = parse(&text).unwrap();
        let properties = config.kafka.unwrap().properties;
        assert!(
            properties.contains(&("sasl.password".to_owned(), "s3cret".to_owned())),
            "{properties:?}"
        );
    }
}
