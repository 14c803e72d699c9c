//! `sconce generate`: one prompt, streamed to stdout.

use std::io::Write;

use clap::Args;
use sconce_engine::{launch, ByteSize, EngineConfig, GenerateRequest, LoadOptions, ModelFrontend, SamplingParams};
use sconce_text::ChatMessage;

use crate::config::Overrides;

/// Model and engine flags are those of `serve` (with their `SCONCE_*` variables); the KV cache
/// defaults to 256 MiB here.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: Overrides<LoadOptions>,
    #[command(flatten)]
    pub engine: Overrides<EngineConfig>,
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 means greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub stop: Vec<String>,
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print timing to stderr at the end.
    #[arg(long)]
    pub stats: bool,
}

impl GenerateArgs {
    fn sampling(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
            ..SamplingParams::default()
        }
    }
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let load = args.model.over(LoadOptions::default())?;
    let engine_defaults = EngineConfig { kv_cache_memory: Some(ByteSize(256 << 20)), ..EngineConfig::default() };
    let config = args.engine.over(engine_defaults)?;
    let (engine, frontend) = launch(&load, config)?;
    let prompt = prompt_tokens(&args, &frontend)?;
    let request = GenerateRequest { id: "generate".into(), prompt, params: args.sampling(), priority: 0 };
    let mut stream = engine.submit(request)?;
    let mut stdout = std::io::stdout().lock();
    while let Some(delta) = stream.blocking_next() {
        stdout.write_all(delta.text.as_bytes())?;
        stdout.flush()?;
        if let (Some(usage), Some(t), true) = (delta.usage, delta.timings, args.stats) {
            let decode_tps = usage.completion_tokens.saturating_sub(1) as f64 / t.decode.as_secs_f64().max(1e-9);
            eprintln!(
                "\n[{} prompt + {} completion tokens; TTFT {:.1} ms; decode {:.1} tok/s; finish {:?}]",
                usage.prompt_tokens,
                usage.completion_tokens,
                t.time_to_first_token.as_secs_f64() * 1e3,
                decode_tps,
                delta.finish_reason
            );
        }
    }
    writeln!(stdout)?;
    engine.shutdown();
    Ok(())
}

/// The prompt as tokens: plain, or as a user message (after an optional system one) in the
/// chat template; BOS as the model wants it.
fn prompt_tokens(args: &GenerateArgs, frontend: &ModelFrontend) -> anyhow::Result<Vec<u32>> {
    if !args.chat {
        return Ok(frontend.encode_text(&args.prompt, true)?);
    }
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(ChatMessage::new("system", system.clone()));
    }
    messages.push(ChatMessage::new("user", args.prompt.clone()));
    let rendered = frontend.chat_template.render(&messages, true)?;
    Ok(frontend.encode_text(&rendered, true)?)
}
