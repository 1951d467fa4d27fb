//! The example config shows every key the config takes.

/// The fields a raw section's struct takes, as serde tells a deserializer.
mod fields {
    use std::cell::RefCell;

    use serde::de::{self, Deserializer, Visitor};

    #[derive(Debug)]
    pub(super) struct Caught;

    impl std::fmt::Display for Caught {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("fields caught")
        }
    }

    impl std::error::Error for Caught {}

    impl de::Error for Caught {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Caught
        }
    }

    struct Catcher<'a>(&'a RefCell<&'static [&'static str]>);

    impl<'de> Deserializer<'de> for Catcher<'_> {
        type Error = Caught;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Caught> {
            Err(Caught)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Caught> {
            *self.0.borrow_mut() = fields;
            Err(Caught)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    pub(super) fn of<'de, T: de::Deserialize<'de>>() -> &'static [&'static str] {
        let fields = RefCell::new(&[][..]);
        let _ = T::deserialize(Catcher(&fields));
        fields.into_inner()
    }
}

/// Every key the config takes appears in `config/asyncgate.toml`, set or
/// commented out, in its section: a key added without a word in the
/// example fails here.
#[test]
fn the_example_config_shows_every_key() {
    use super::super::raw::{
        RawAdmin, RawDefault, RawKafka, RawRoute, RawServer, RawStore, RawUpstream, RawWebhooks,
    };
    let sections: [(&str, &[&str]); 8] = [
        ("server", fields::of::<RawServer>()),
        ("store", fields::of::<RawStore>()),
        ("upstreams", fields::of::<RawUpstream>()),
        ("routes", fields::of::<RawRoute>()),
        ("default", fields::of::<RawDefault>()),
        ("webhooks", fields::of::<RawWebhooks>()),
        ("admin", fields::of::<RawAdmin>()),
        ("kafka", fields::of::<RawKafka>()),
    ];
    // Each section's keys as the example names them, `# key = …` too.
    let mut shown: std::collections::HashMap<String, Vec<String>> = Default::default();
    let mut section = String::new();
    for line in include_str!("../../../config/asyncgate.toml").lines() {
        let line = line.trim_start_matches(['#', ' ']);
        if let Some(header) = line.strip_prefix('[') {
            let name = header.trim_start_matches('[');
            if let Some(end) = name.find(']') {
                section = name[..end].split('.').next().unwrap_or_default().to_owned();
                continue;
            }
        }
        if let Some((key, _)) = line.split_once(" = ") {
            if key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                shown
                    .entry(section.clone())
                    .or_default()
                    .push(key.to_owned());
            }
        }
    }
    let mut missing = Vec::new();
    for (section, keys) in sections {
        assert!(!keys.is_empty(), "no fields caught for [{section}]");
        for key in keys {
            if !shown
                .get(section)
                .is_some_and(|k| k.iter().any(|k| k == key))
            {
                missing.push(format!("[{section}] {key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in config/asyncgate.toml: {missing:?}"
    );
}
