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
