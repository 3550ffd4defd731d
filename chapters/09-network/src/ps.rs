//! `mydocker ps`: the containers, in Docker's table.

use std::cmp::Reverse;

use anyhow::Result;

use crate::container;
use crate::id;
use crate::images::{ago, print_table};
use crate::lifecycle::root_only;
use crate::paths::Paths;
use crate::record::{Record, State};

// ANCHOR: ps
/// `mydocker ps [-a] [-q]`: the running containers (`-a`: all), newest
/// first; `-q`: only their short IDs.
pub fn ps(paths: &Paths, all: bool, quiet: bool) -> Result<i32> {
    root_only()?;
    let mut records = Vec::new();
    for id in container::all(paths)? {
        let Some(record) = current_record(paths, &id)? else {
            continue;
        };
        if all || record.state == State::Running {
            records.push(record);
        }
    }
    records.sort_by_key(|record| Reverse(record.created));
    if quiet {
        for record in &records {
            println!("{}", id::short(&record.id));
        }
        return Ok(0);
    }
    let header = [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "NAMES",
    ];
    let rows = records.iter().map(row).collect();
    print_table(header.map(String::from), rows);
    Ok(0)
}

// ANCHOR: current_record
/// The record of container `id`, true to the facts: one that says
/// "running" while no monitor holds the lock is settled first (see
/// `container::settle`). None if there is no container (any more).
fn current_record(paths: &Paths, id: &str) -> Result<Option<Record>> {
    let dir = paths.container(id);
    let record = match Record::load_if_there(&dir) {
        Ok(Some(record)) => record,
        // Being made (no record yet) or being removed.
        Ok(None) => return Ok(None),
        // One broken record must not hide the others.
        Err(err) => {
            eprintln!("mydocker: warning: {err:#}");
            return Ok(None);
        }
    };
    // Only a record that does not say "exited" can be wrong: a monitor
    // writes "exited" before it lets the lock go.
    if record.state == State::Exited || container::is_running(paths, id)? {
        return Ok(Some(record));
    }
    if let Some(_change) = container::change(paths, id)? {
        container::settle(paths, id)?;
    }
    Record::load_if_there(&dir)
}
// ANCHOR_END: current_record

// ANCHOR: row
/// One line of the table.
fn row(record: &Record) -> [String; 6] {
    let status = match record.state {
        State::Created => "Created".to_string(),
        State::Running => {
            let since = record.started.unwrap_or(record.created);
            format!("Up {}", ago(since).trim_end_matches(" ago"))
        }
        State::Exited => format!(
            "Exited ({}) {}",
            record.exit_code.unwrap_or(255),
            ago(record.finished.unwrap_or(record.created))
        ),
    };
    [
        id::short(&record.id).to_string(),
        record.image.clone(),
        command(&record.config.command),
        ago(record.created),
        status,
        record.name.clone(),
    ]
}

/// The command as Docker shows it: an argument with a space in single
/// quotes (not the program), cut to 20 characters, in double quotes.
fn command(command: &[String]) -> String {
    let mut words = Vec::new();
    for (i, word) in command.iter().enumerate() {
        match i > 0 && word.contains(' ') {
            true => words.push(format!("'{word}'")),
            false => words.push(word.clone()),
        }
    }
    let text = words.join(" ");
    let text = match text.chars().count() {
        0..=20 => text,
        _ => text.chars().take(19).chain(['…']).collect(),
    };
    format!("{text:?}")
}
// ANCHOR_END: row
// ANCHOR_END: ps

#[cfg(test)]
mod tests {
    use super::command;

    #[test]
    fn commands_are_cut_and_quoted_like_dockers() {
        let words =
            |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(command(&words("sleep 1000")), r#""sleep 1000""#);
        let script = ["sh", "-c", "while true; do sleep 1; done"];
        assert_eq!(
            command(&script.map(String::from)),
            r#""sh -c 'while true; …""#
        );
        assert_eq!(command(&words("echo \"hi\"")), r#""echo \"hi\"""#);
    }
}
