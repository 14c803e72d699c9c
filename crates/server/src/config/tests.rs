use super::*;
use clap::Parser;

/// A command with the serve flags and nothing else.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    settings: Overrides<Config>,
}

fn flags(args: &[&str]) -> Overrides<Config> {
    Flags::try_parse_from(std::iter::once("sconce").chain(args.iter().copied())).unwrap().settings
}

fn error_of(toml: &str) -> String {
    format!("{:#}", Config::from_toml(toml).unwrap_err())
}

#[test]
fn file_values_override_defaults_and_flags_override_the_file() {
    let mut config =
        Config::from_toml("[server]\nport = 9000\nhost = \"0.0.0.0\"\n[engine]\nkv_cache_memory = \"1GiB\"\n").unwrap();
    assert_eq!(config.server.port, 9000);
    assert_eq!(config.engine.kv_cache_memory, Some(ByteSize(1 << 30)));
    assert_eq!(config.engine.max_num_seqs, 256);
    flags(&["--port", "9100"]).apply(&mut config).unwrap();
    assert_eq!(config.server.port, 9100);
    assert_eq!(config.server.host, "0.0.0.0");
}

#[test]
fn flags_not_given_leave_the_file_and_the_defaults_alone() {
    let from_file = Config::from_toml("[model]\nallow_hub = false\nquantization = \"q8_0\"\n").unwrap();
    let mut config = from_file.clone();
    flags(&[]).apply(&mut config).unwrap();
    assert_eq!(config, from_file);
}

#[test]
fn typed_flags_parse_into_every_section() {
    let mut config = Config::default();
    let given = flags(&[
        "--model=m",
        "--device=cuda:2",
        "--dtype=bf16",
        "--quantization=q8_0",
        "--load-format=dummy",
        "--unfused",
        "--kv-cache-memory=2GiB",
        "--max-request-body-bytes=1MiB",
        "--drain-timeout=5",
        "--metrics-vllm-compat=true",
        "--log-level=debug",
        "--limit-stop=3",
        "--limit-logprob-entries=1000",
        "--parse-special-in-content=true",
    ]);
    given.apply(&mut config).unwrap();
    assert_eq!(config.model.name, "m");
    assert_eq!(config.model.device, DeviceSpec::Cuda(2));
    assert_eq!(config.model.dtype, Some(WeightDtype::Bf16));
    assert_eq!(config.model.quantization, QuantizationMode::Q8_0);
    assert_eq!(config.model.load_format, LoadFormat::Dummy);
    assert!(config.model.unfused);
    assert_eq!(config.engine.kv_cache_memory, Some(ByteSize(2 << 30)));
    assert_eq!(config.server.max_request_body_bytes, ByteSize(1 << 20));
    assert_eq!(config.server.drain_timeout_secs, 5);
    assert!(config.metrics.vllm_compat);
    assert_eq!(config.log.level, "debug");
    assert_eq!((config.limits.max_stop, config.limits.max_logprob_entries), (3, 1000));
    assert_eq!(config.limits.max_n, 128, "limits without a flag keep their default");
    assert!(config.model.parse_special_in_content);
}

#[test]
fn limits_read_from_the_file() {
    let config = Config::from_toml(
        "[limits]
max_stop = 2
max_user_bytes = 64
",
    )
    .unwrap();
    assert_eq!((config.limits.max_stop, config.limits.max_user_bytes), (2, 64));
    assert_eq!(config.limits.max_logit_bias, 300);
}

#[test]
fn bad_flag_values_name_the_allowed_ones() {
    let parse = |args: &[&str]| Flags::try_parse_from(std::iter::once("sconce").chain(args.iter().copied()));
    let quantization = parse(&["--quantization", "q4"]).err().unwrap().to_string();
    assert!(quantization.contains("none") && quantization.contains("q8_0"), "{quantization}");
    let device = parse(&["--device", "tpu"]).err().unwrap().to_string();
    assert!(device.contains("cpu, cuda or cuda:N"), "{device}");
    let load_format = parse(&["--load-format", "fast"]).err().unwrap().to_string();
    assert!(load_format.contains("auto") && load_format.contains("dummy"), "{load_format}");
}

#[test]
fn bad_file_values_name_the_allowed_ones() {
    let dtype = error_of("[model]\ndtype = \"f8\"\n");
    assert!(dtype.contains("f32") && dtype.contains("bf16"), "{dtype}");
    let device = error_of("[model]\ndevice = \"tpu\"\n");
    assert!(device.contains("cpu, cuda or cuda:N"), "{device}");
}

#[test]
fn unknown_keys_in_the_file_are_errors() {
    assert!(Config::from_toml("[server]\nprot = 1\n").is_err());
}

#[test]
fn unknown_keys_are_named_in_every_section() {
    for (section, key) in [
        ("server", "prot"),
        ("model", "nmae"),
        ("engine", "max_num_sequences"),
        ("metrics", "vllm"),
        ("log", "colour"),
        ("limits", "max_stops"),
        ("gateway", "enabeld"),
        ("gateway.cache", "ttl_seconds_typo"),
        ("gateway.routing", "fallback"),
    ] {
        let error = error_of(&format!("[{section}]\n{key} = 1\n"));
        assert!(error.contains(key), "[{section}] {key}: {error}");
    }
    assert!(error_of("[engine]\ncapture_logits = true\n").contains("capture_logits"));
}

#[test]
fn printed_config_reads_back_identically() {
    let mut config = Config::default();
    config.engine.kv_cache_memory = Some(ByteSize(123));
    config.model.device = DeviceSpec::Cuda(1);
    config.model.dtype = Some(WeightDtype::F16);
    let text = config.to_toml().unwrap();
    assert_eq!(Config::from_toml(&text).unwrap(), config);
}

#[test]
fn shipped_config_file_matches_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/sconce.toml");
    let shipped = Config::load(Some(Path::new(path))).unwrap();
    assert_eq!(shipped, Config::default());
}

#[test]
fn shipped_config_file_documents_every_key() {
    let shipped = include_str!("../../../../config/sconce.toml");
    let mut full = Config::default();
    full.model.served_model_name = Some("x".into());
    full.model.dtype = Some(WeightDtype::F32);
    full.model.model_config = Some("x".into());
    full.engine.kv_cache_memory = Some(ByteSize(1));
    full.engine.max_model_len = Some(1);
    let mut entry = ModelEntry::embedding("x");
    entry.served_model_name = Some("x".into());
    full.models = vec![entry];
    let printed: toml::Table = toml::from_str(&full.to_toml().unwrap()).unwrap();
    for (section, keys) in printed {
        assert!(shipped.contains(&format!("[{section}]")), "missing [{section}]");
        let table = match keys {
            toml::Value::Array(entries) => entries[0].as_table().unwrap().clone(),
            other => other.as_table().unwrap().clone(),
        };
        for key in table.keys() {
            assert!(shipped.contains(&format!("{key} = ")), "config/sconce.toml lacks `{key}`");
        }
    }
}

#[test]
fn embedding_models_come_from_the_file_or_the_repeatable_flag() {
    let from_file = Config::from_toml("[[models]]\nname = \"all-minilm-l6-v2\"\nkind = \"embedding\"\n").unwrap();
    assert_eq!(from_file.models, vec![ModelEntry::embedding("all-minilm-l6-v2")]);
    let mut config = from_file.clone();
    flags(&["--embedding-model", "a", "--embedding-model", "b"]).apply(&mut config).unwrap();
    let names: Vec<&str> = config.models.iter().map(|entry| entry.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(error_of("[[models]]\nname = \"m\"\nkind = \"embedding\"\nmax_batch = 1\n").contains("max_batch"));
    let printed = config.to_toml().unwrap();
    assert_eq!(Config::from_toml(&printed).unwrap(), config);
}
