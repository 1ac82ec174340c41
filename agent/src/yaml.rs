//! How the agent reads YAML (manifests, the configuration file):
//! serde-saphyr, as kube-rs does, with one set of options.

/// The parser options for every YAML input of the agent:
///
/// - YAML 1.2 booleans only (`true`/`false`): `yes`, `on` stay strings, as
///   they were with serde_yaml and as JSON-minded tools write them;
/// - a budget raised far beyond any real directory's files (by default
///   1,024 documents and 250,000 nodes per input, made against hostile
///   input): manifests and the configuration are the operator's own files
///   and one file may hold thousands of objects. Alias expansion stays
///   capped;
/// - no source snippet in error messages: they go on one log line, and
///   the position (line, column) is in the message.
pub fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: None,
            max_documents: 1 << 24,
            max_nodes: 1 << 32,
            max_events: 1 << 34,
            max_total_scalar_bytes: 1 << 34,
        },
        strict_booleans: true,
        with_snippet: false,
    }
}

/// One YAML document into `T` with [`options`].
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(text, options())
}
