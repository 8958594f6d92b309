//! Reading an uploaded component without compiling it: full validation and its
//! top-level import and export names, parsed incrementally from a file so only one
//! section (or function body) of a large upload is in memory at a time. Blocking: run it
//! off the async threads.

use std::io::Read;
use std::path::Path;

use wasmparser::{Chunk, Encoding, Parser, Payload, ValidPayload, Validator, WasmFeatures};

/// What a component needs and offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

pub use stratus_proto::interfaces::ComponentError;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Refused(#[from] ComponentError),
    #[error("reading the staged upload: {0}")]
    Io(#[from] std::io::Error),
}

const READ_CHUNK: usize = 64 << 10;

/// Validates the component in `path` and lists its top-level imports and exports.
pub fn inspect(path: &Path) -> Result<Inspection, InspectError> {
    let mut file = std::fs::File::open(path)?;
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut eof = false;
    let mut parser = Parser::new(0);
    let mut parents: Vec<Parser> = Vec::new();
    let mut validator = Validator::new_with_features(WasmFeatures::default());
    let mut allocations = wasmparser::FuncValidatorAllocations::default();
    let mut out = Inspection {
        imports: Vec::new(),
        exports: Vec::new(),
    };
    let invalid = |e: wasmparser::BinaryReaderError| ComponentError::Invalid(e.to_string());
    let mut first = true;
    loop {
        let (consumed, done) = match parser.parse(&buf, eof) {
            Err(e) => {
                return Err(if first && !buf.starts_with(b"\0asm") {
                    ComponentError::NotWasm.into()
                } else {
                    invalid(e).into()
                });
            }
            Ok(Chunk::NeedMoreData(_)) => {
                if eof {
                    return Err(ComponentError::Invalid("unexpected end of file".into()).into());
                }
                let start = buf.len();
                buf.resize(start + READ_CHUNK, 0);
                let n = file.read(buf.get_mut(start..).unwrap_or_default())?;
                buf.truncate(start + n);
                eof = n == 0;
                continue;
            }
            Ok(Chunk::Parsed { consumed, payload }) => {
                let top = parents.is_empty();
                if first {
                    first = false;
                    if let Payload::Version {
                        encoding: Encoding::Module,
                        ..
                    } = payload
                    {
                        return Err(ComponentError::CoreModule.into());
                    }
                }
                match &payload {
                    Payload::ComponentImportSection(reader) if top => {
                        for import in reader.clone() {
                            out.imports
                                .push(import.map_err(invalid)?.name.name.to_string());
                        }
                    }
                    Payload::ComponentExportSection(reader) if top => {
                        for export in reader.clone() {
                            out.exports
                                .push(export.map_err(invalid)?.name.name.to_string());
                        }
                    }
                    _ => {}
                }
                let mut done = false;
                match validator.payload(&payload).map_err(invalid)? {
                    ValidPayload::Ok => {}
                    ValidPayload::Parser(nested) => {
                        parents.push(std::mem::replace(&mut parser, nested));
                    }
                    ValidPayload::Func(func, body) => {
                        let mut func = func.into_validator(std::mem::take(&mut allocations));
                        func.validate(&body).map_err(invalid)?;
                        allocations = func.into_allocations();
                    }
                    ValidPayload::End(_) => match parents.pop() {
                        Some(parent) => parser = parent,
                        None => done = true,
                    },
                }
                (consumed, done)
            }
        };
        buf.drain(..consumed);
        if done {
            break;
        }
    }
    if stratus_proto::interfaces::handlers(out.exports.iter().map(String::as_str)).is_empty() {
        return Err(ComponentError::NoHandler(format!(
            "it exports {}",
            if out.exports.is_empty() {
                "nothing".to_string()
            } else {
                out.exports.join(", ")
            }
        ))
        .into());
    }
    Ok(out)
}
