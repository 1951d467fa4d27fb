//! The `[kafka]` section and a route's `kafka_topic`.

use toml::Spanned;

use super::super::cx::Cx;
use super::super::raw::RawKafka;
use super::super::{ConfigError, KafkaConfig, Mode};

impl Cx<'_> {
    pub(super) fn kafka(&self, raw: Spanned<RawKafka>) -> Result<KafkaConfig, ConfigError> {
        let span = raw.span();
        let raw = raw.into_inner();
        if !cfg!(feature = "kafka") {
            return Err(self.err(
                span,
                "this asyncgate was built without Kafka (the `kafka` cargo feature)",
            ));
        }
        let brokers = raw
            .brokers
            .as_ref()
            .filter(|b| !b.get_ref().is_empty())
            .ok_or_else(|| self.err(span.clone(), "needs `brokers`, a list of host:port"))?;
        let brokers = brokers
            .get_ref()
            .iter()
            .map(|b| {
                let text = b.get_ref();
                match text.rsplit_once(':') {
                    Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                        Ok(text.clone())
                    }
                    _ => Err(self.err(b.span(), format!("`{text}` is not a host:port"))),
                }
            })
            .collect::<Result<Vec<_>, _>>()?
            .join(",");
        let mut properties = Vec::with_capacity(raw.properties.len());
        for (key, value) in raw.properties {
            if crate::defaults::KAFKA_FIXED.contains(&key.as_str()) {
                return Err(self.err(
                    value.span(),
                    format!("`{key}` is set by the gateway (acks=all, an idempotent producer, brokers from `brokers`)"),
                ));
            }
            properties.push((key, value.into_inner()));
        }
        let config = KafkaConfig {
            brokers,
            properties,
        };
        #[cfg(feature = "kafka")]
        crate::kafka::check(&config).map_err(|e| self.err(span, e))?;
        Ok(config)
    }

    /// A route's `kafka_topic` needs a producer, and jobs whose every end
    /// is news: an `auto` or `prefer` route may answer without one.
    pub(super) fn kafka_topic(
        &self,
        topic: &Spanned<String>,
        mode: Mode,
        producer: bool,
    ) -> Result<(), ConfigError> {
        if !cfg!(feature = "kafka") {
            return Err(self.err(
                topic.span(),
                "this asyncgate was built without Kafka (the `kafka` cargo feature)",
            ));
        }
        if !producer {
            return Err(self.err(topic.span(), "needs [kafka] brokers"));
        }
        if mode != Mode::Async {
            return Err(self.err(
                topic.span(),
                "needs mode = \"async\": other modes may answer without a job",
            ));
        }
        let t = topic.get_ref();
        // Kafka's own rule for topic names.
        let legal = !t.is_empty()
            && t.len() <= 249
            && t != "."
            && t != ".."
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !legal {
            return Err(self.err(
                topic.span(),
                format!(
                    "`{t}` is not a Kafka topic name (letters, digits, `.`, `_`, `-`; at most 249)"
                ),
            ));
        }
        Ok(())
    }
}
