//! `sconce generate`: one prompt, streamed to stdout.

use std::io::Write;

use clap::Args;
use sconce_engine::{launch, EngineConfig, GenerateRequest, SamplingParams};
use sconce_text::ChatMessage;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Catalog name, Hugging Face Hub id, or local path (HF folder or .gguf file).
    #[arg(long, default_value = "smollm2-135m-instruct")]
    pub model: String,
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
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long)]
    pub dtype: Option<String>,
    #[command(flatten)]
    pub load_format: super::load::LoadFormatArgs,
    /// KV cache size in bytes.
    #[arg(long, default_value_t = 256 << 20)]
    pub kv_cache_memory: u64,
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
    let load = args.load_format.options(&args.device, args.dtype.clone());
    let config = EngineConfig { kv_cache_memory: Some(args.kv_cache_memory), ..EngineConfig::default() };
    let engine = launch(&args.model, &load, config)?;
    let prompt = if args.chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::new("system", system.clone()));
        }
        messages.push(ChatMessage::new("user", args.prompt.clone()));
        let rendered = engine.chat_template().render(&messages, true)?;
        engine.tokenizer().encode_prompt(&rendered, engine.tokenizer().add_bos_by_default())?
    } else {
        engine.tokenizer().encode_prompt(&args.prompt, engine.tokenizer().add_bos_by_default())?
    };
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
