//! `shoal checkpoint save FILE` (inside an attempt) and
//! `shoal checkpoint show ID`: clients of `/v1/tasks/{id}/checkpoint`.

use super::tasks::{check_id, ApiArgs, Body, Client, TaskCliError};
use crate::cli::terminal::terminal_safe;
use crate::tasks::view::CheckpointView;
use clap::{Args, Subcommand};
use shoal_protocol::tasks::checkpoint::MAX_CHECKPOINT_BYTES;
use std::path::PathBuf;

/// `shoal checkpoint ...`.
#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Save FILE as this attempt's checkpoint, for the task's next attempt
    /// (run it inside an attempt: the agent sets the variables it reads).
    Save(SaveArgs),
    /// Show a task's latest checkpoint: size, attempt, time.
    Show(ShowArgs),
}

/// `shoal checkpoint save`.
#[derive(Debug, Clone, Args)]
pub struct SaveArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The file to save (at most 16 MiB).
    pub file: PathBuf,
    /// The task [default: $SHOAL_TASK_ID, set in every attempt].
    #[arg(long, env = "SHOAL_TASK_ID")]
    pub task: String,
    /// The saving attempt [default: $SHOAL_ATTEMPT, set in every attempt].
    #[arg(long, env = "SHOAL_ATTEMPT")]
    pub attempt: u64,
}

/// `shoal checkpoint show`.
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The task id.
    pub id: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs a checkpoint command.
pub async fn run(command: CheckpointCommand) -> Result<i32, TaskCliError> {
    match command {
        CheckpointCommand::Save(args) => save(args).await,
        CheckpointCommand::Show(args) => show(args).await,
    }
}

async fn save(args: SaveArgs) -> Result<i32, TaskCliError> {
    check_id(&args.task)?;
    let file = args.file.display().to_string();
    let len = std::fs::metadata(&args.file)
        .map_err(|e| TaskCliError::Usage(format!("{}: {e}", terminal_safe(&file))))?
        .len();
    if len > MAX_CHECKPOINT_BYTES {
        return Err(TaskCliError::Usage(format!(
            "{}: {len} bytes is larger than the checkpoint limit of {MAX_CHECKPOINT_BYTES} bytes",
            terminal_safe(&file)
        )));
    }
    let bytes = std::fs::read(&args.file)
        .map_err(|e| TaskCliError::Usage(format!("{}: {e}", terminal_safe(&file))))?;
    let client = Client::new(&args.api)?;
    let path = format!(
        "/v1/tasks/{}/checkpoint?attempt={}",
        args.task, args.attempt
    );
    let saved: CheckpointView = client
        .json(reqwest::Method::POST, &path, Body::Bytes(bytes))
        .await?;
    eprintln!(
        "checkpoint of task {} saved: {} bytes from attempt {}, on {} holders",
        terminal_safe(&args.task),
        saved.size,
        saved.attempt,
        saved.holders.len()
    );
    Ok(0)
}

async fn show(args: ShowArgs) -> Result<i32, TaskCliError> {
    check_id(&args.id)?;
    let client = Client::new(&args.api)?;
    let view: CheckpointView = client
        .json(
            reqwest::Method::GET,
            &format!("/v1/tasks/{}/checkpoint", args.id),
            Body::Empty,
        )
        .await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&view).expect("views serialise")
        );
    } else {
        println!("SIZE       {} bytes", view.size);
        println!("ATTEMPT    {}", view.attempt);
        println!("SAVED      {}", terminal_safe(&view.saved_at));
        println!("SHA256     {}", terminal_safe(&view.sha256));
        println!("HOLDERS    {}", view.holders.len());
    }
    Ok(0)
}
