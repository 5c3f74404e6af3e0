//! `devbatch devices`, `ops` and `plugins`.

use std::fmt::Write as _;

use devbatch_core::{DeviceState, LabelSelector};
use serde_json::{Value, json};

use crate::cli::{DevicesArgs, ListArgs, ListFormat};
use crate::context::Context;
use crate::error::CliError::Usage;
use crate::error::{CliError, exit_code};
use crate::output::{emit, printable};

pub(crate) fn devices(args: &DevicesArgs, ctx: &Context) -> Result<i32, CliError> {
    let selectors = args
        .selection
        .select
        .iter()
        .map(|s| s.parse::<LabelSelector>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Usage(e.to_string()))?;
    let mut devices = ctx.pool().select(&selectors);
    let ids = crate::run::requested_ids(&args.selection)?;
    if let Some(ids) = &ids {
        crate::run::check_known(ctx, ids)?;
        devices.retain(|d| ids.iter().any(|id| id == d.id()));
    }
    let rows: Vec<Value> = devices
        .iter()
        .map(|d| {
            let state = d.state();
            let mut row = json!({
                "id": d.id(),
                "backend": d.backend(),
                "state": state.as_str(),
                "labels": d.labels(),
            });
            if let DeviceState::NotReady { hint, .. } = &state {
                row["hint"] = Value::String(hint.clone());
            }
            row
        })
        .collect();
    let out = match args.output {
        ListFormat::Json => serde_json::to_string_pretty(&rows).expect("rows serialize") + "\n",
        ListFormat::Human => {
            let table: Vec<[String; 4]> = devices
                .iter()
                .map(|d| {
                    let labels = d
                        .labels()
                        .iter()
                        .map(|(k, v)| format!("{}={}", printable(k), printable(v)))
                        .collect::<Vec<_>>()
                        .join(",");
                    [
                        printable(d.id()).into_owned(),
                        d.backend().to_string(),
                        d.state().as_str().to_string(),
                        labels,
                    ]
                })
                .collect();
            let mut out = render_table(["ID", "BACKEND", "STATE", "LABELS"], &table);
            for d in &devices {
                if let DeviceState::NotReady { state, hint } = d.state() {
                    let _ = writeln!(
                        out,
                        "note: {} is {state}: {}",
                        printable(d.id()),
                        printable(&hint)
                    );
                }
            }
            let _ = writeln!(
                out,
                "{} {} from {}",
                devices.len(),
                if devices.len() == 1 {
                    "device"
                } else {
                    "devices"
                },
                ctx.pool_source
            );
            out
        }
    };
    emit(&out)?;
    Ok(if devices.is_empty() {
        exit_code::NO_DEVICES
    } else {
        exit_code::SUCCESS
    })
}

pub(crate) fn ops(args: &ListArgs, ctx: &Context) -> Result<i32, CliError> {
    let mut entries: Vec<Value> = Vec::new();
    for (op, source) in ctx.registry().operations() {
        entries.push(json!({
            "name": op.name(),
            "backend": op.backend(),
            "description": op.description(),
            "idempotent": op.idempotent(),
            "default_timeout": humantime::format_duration(op.default_timeout()).to_string(),
            "params": op.params(),
            "source": source,
        }));
    }
    let mut out = String::new();
    match args.output {
        ListFormat::Json => {
            out = serde_json::to_string_pretty(&entries).expect("ops serialize") + "\n";
        }
        ListFormat::Human => {
            for e in &entries {
                let scope = match e["backend"].as_str() {
                    Some(b) => format!(" (for {b} devices)"),
                    None => String::new(),
                };
                let _ = writeln!(
                    out,
                    "{}{scope}: {}",
                    e["name"].as_str().unwrap_or_default(),
                    e["description"].as_str().unwrap_or_default()
                );
                let _ = writeln!(
                    out,
                    "  idempotent: {}, default timeout: {}, from {}",
                    if e["idempotent"] == true { "yes" } else { "no" },
                    e["default_timeout"].as_str().unwrap_or_default(),
                    e["source"].as_str().unwrap_or_default()
                );
                for p in e["params"].as_array().into_iter().flatten() {
                    let required = if p["required"] == true {
                        "required".to_string()
                    } else if p["default"].is_null() {
                        "optional".to_string()
                    } else {
                        format!("default {}", p["default"])
                    };
                    let _ = writeln!(
                        out,
                        "  --param {}=<{}>  ({required}) {}",
                        p["name"].as_str().unwrap_or_default(),
                        p["type"].as_str().unwrap_or_default(),
                        p["help"].as_str().unwrap_or_default()
                    );
                }
            }
        }
    }
    emit(&out)?;
    Ok(exit_code::SUCCESS)
}

pub(crate) fn plugins(args: &ListArgs, ctx: &Context) -> Result<i32, CliError> {
    let mut out = String::new();
    match args.output {
        ListFormat::Json => {
            out = serde_json::to_string_pretty(&ctx.plugins).expect("plugins serialize") + "\n";
        }
        ListFormat::Human if ctx.plugins.is_empty() => {
            out = "no plugins loaded (use --plugin PATH, $DEVBATCH_PLUGIN_PATH or plugins = [...] in the pool file)\n".into();
        }
        ListFormat::Human => {
            for p in &ctx.plugins {
                let _ = writeln!(
                    out,
                    "{} {} ({})",
                    printable(&p.name),
                    printable(&p.version),
                    p.path.display()
                );
                if !p.operations.is_empty() {
                    let _ = writeln!(out, "  operations: {}", p.operations.join(", "));
                }
                if !p.backends.is_empty() {
                    let _ = writeln!(out, "  backends: {}", p.backends.join(", "));
                }
            }
        }
    }
    emit(&out)?;
    Ok(exit_code::SUCCESS)
}

fn render_table(header: [&str; 4], rows: &[[String; 4]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: [&str; 4], out: &mut String| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            l.push_str(c);
            if i < 3 {
                // Padded by hand: a format width cannot exceed 65,535.
                let pad = w - c.chars().count() + 2;
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let _ = writeln!(out, "{}", l.trim_end());
    };
    line(header, &mut out);
    for r in rows {
        line([&r[0], &r[1], &r[2], &r[3]], &mut out);
    }
    out
}
