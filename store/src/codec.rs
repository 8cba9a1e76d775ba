//! The bytes of a store: how values become the bytes of a chunk or of a per-step row and back.
//! Every array is little-endian `bytes`; float arrays of f32 stores then pass through blosc.
//! Per-step arrays are sharded along the step axis (the file mechanics are in `shard.rs`), and
//! their rows are encoded and decoded here directly, one row at a time, rather than through
//! zarrs' sharding codec: that codec cannot append in place, nor tell a missing row from a
//! fill value.

use crate::TrainDType;
use crate::layout::Element;
use std::borrow::Cow;
use std::num::NonZeroU64;
use std::sync::Arc;
use zarrs::array::codec::api::{BytesRepresentation, BytesToBytesCodecTraits, CodecError};
use zarrs::array::codec::{
    BloscCodec, BloscCompressionLevel, BloscCompressor, BloscShuffleMode, BytesCodec,
    ShardingCodec, ShardingCodecBuilder, ShardingIndexLocation,
};
use zarrs::array::{Array, ArrayError, CodecOptions, DataType};
use zarrs::filesystem::FilesystemStore;
use zarrs::metadata_ext::codec::blosc::BloscCodecConfiguration;

/// Blosc's compression level for LZ4 (its own default).
const BLOSC_LEVEL: u8 = 5;
/// The level for Zstandard: its own default, a good ratio at a few hundred MB/s.
const ZSTD_LEVEL: u8 = 3;

/// A blosc codec to decode with: a blosc frame describes its own compressor and shuffle, so
/// this one decodes rows written under any [`Compression`].
fn blosc(typesize: usize) -> BloscCodec {
    BloscCodec::new(
        BloscCompressor::LZ4,
        BloscCompressionLevel::try_from(BLOSC_LEVEL).expect("a level in 0..=9"),
        None,
        BloscShuffleMode::Shuffle,
        Some(typesize),
    )
    .expect("c-blosc always has LZ4")
}

/// How a store's float arrays are compressed (the per-step weights and dL/df, and the data
/// sets): blosc, which zarr-python reads without plug-ins, after a byte shuffle.
///
/// Trained weights' low mantissa bytes are close to random, so compression mostly finds the
/// sign and exponent bytes: blosc-LZ4 gave 1.11× on Burn's guide model in f32 and about
/// 1.07× on f64 weights. It costs the writer a join of the row and the compression, which on
/// a machine whose cores all train is time taken from training; `bench_record --compression`
/// measures both sides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// The training dtype's default: [`Compression::Lz4`] for f32 stores, none for f64.
    #[default]
    Auto,
    /// Rows as their little-endian bytes: the writer's cheapest, the largest store.
    None,
    /// blosc with LZ4 (level 5, blosc's default): fast.
    Lz4,
    /// blosc with Zstandard (level 3): smaller, slower to write.
    Zstd,
}

impl Compression {
    /// The blosc codec of `element`'s arrays under this choice, if any.
    pub(crate) fn blosc(self, element: Element) -> Option<BloscCodec> {
        let Element::Float(dtype) = element else {
            return None;
        };
        let (compressor, level) = match (self, dtype) {
            (Compression::None, _) | (Compression::Auto, TrainDType::F64) => return None,
            (Compression::Lz4, _) | (Compression::Auto, TrainDType::F32) => {
                (BloscCompressor::LZ4, BLOSC_LEVEL)
            }
            (Compression::Zstd, _) => (BloscCompressor::Zstd, ZSTD_LEVEL),
        };
        Some(
            BloscCodec::new(
                compressor,
                BloscCompressionLevel::try_from(level).expect("a level in 0..=9"),
                None,
                BloscShuffleMode::Shuffle,
                Some(element.width()),
            )
            .expect("c-blosc is built with LZ4 and Zstandard"),
        )
    }
}

/// The bytes-to-bytes codecs of an element type's arrays under `choice`.
pub(crate) fn compression(
    element: Element,
    choice: Compression,
) -> Vec<Arc<dyn BytesToBytesCodecTraits>> {
    match choice.blosc(element) {
        Some(codec) => vec![Arc::new(codec)],
        None => Vec::new(),
    }
}

/// The blosc codec a per-step array's metadata names for its rows, if any: the writer
/// compresses with it, whatever choice created the store (a resumed store keeps its codec).
pub(crate) fn row_codec(metadata: &serde_json::Value) -> Result<Option<BloscCodec>, String> {
    let inner = &metadata["codecs"][0]["configuration"]["codecs"][1];
    if inner.is_null() {
        return Ok(None);
    }
    let configuration: BloscCodecConfiguration =
        serde_json::from_value(inner["configuration"].clone())
            .map_err(|e| format!("the rows' blosc configuration: {e}"))?;
    BloscCodec::new_with_configuration(&configuration)
        .map(Some)
        .map_err(|e| format!("the rows' blosc configuration: {e}"))
}

/// The sharding codec of a per-step array: rows of `subchunk` shape, little-endian, then
/// `inner` (blosc for f32 floats); the index at the start of the file, without a checksum
/// because the recorder rewrites one entry in place per step and a live reader may read the
/// index while an uncommitted entry changes (only that entry can differ from what it saw).
pub(crate) fn sharding(
    subchunk: &[u64],
    data_type: &DataType,
    inner: Vec<Arc<dyn BytesToBytesCodecTraits>>,
) -> Arc<ShardingCodec> {
    let shape = subchunk
        .iter()
        .map(|&d| NonZeroU64::new(d).expect("the attributes check nonzero sizes"))
        .collect();
    ShardingCodecBuilder::new(shape, data_type)
        .array_to_bytes_codec(Arc::new(BytesCodec::little()))
        .bytes_to_bytes_codecs(inner)
        .index_array_to_bytes_codec(Arc::new(BytesCodec::little()))
        .index_bytes_to_bytes_codecs(Vec::new())
        .index_location(ShardingIndexLocation::Start)
        .build_arc()
}

/// Checks that an array's metadata (as JSON) shards its rows the way [`sharding`] does: rows
/// little-endian and optionally blosc-compressed, the index at the start without a checksum.
/// Says whether rows are blosc-compressed; the error says what the format needs.
pub(crate) fn sharded_rows_blosc(metadata: &serde_json::Value) -> Result<bool, &'static str> {
    let codecs = &metadata["codecs"];
    let little = serde_json::json!({"name": "bytes", "configuration": {"endian": "little"}});
    let sharding = &codecs[0]["configuration"];
    let inner = sharding["codecs"].as_array().cloned().unwrap_or_default();
    let blosc = inner.len() == 2 && inner[1]["name"] == "blosc";
    let ok = codecs.as_array().is_some_and(|c| c.len() == 1)
        && codecs[0]["name"] == "sharding_indexed"
        && sharding["index_location"] == "start"
        && sharding["index_codecs"] == serde_json::json!([little])
        && inner.first() == Some(&little)
        && (inner.len() == 1 || blosc);
    if ok {
        Ok(blosc)
    } else {
        Err(
            "the format needs sharding_indexed (index at the start, bytes little-endian, no index checksum) over bytes little-endian and optionally blosc",
        )
    }
}

/// The training dtype as bytes: values travel as f64 and are narrowed on write (exactly,
/// since they came from that dtype) and widened on read (exactly).
#[derive(Clone, Copy)]
pub(crate) struct FloatType(pub(crate) TrainDType);

impl FloatType {
    /// Encodes a row the way the per-step arrays' inner codecs decode it: little-endian
    /// bytes of the dtype, then `blosc` if the array has it.
    pub(crate) fn encode<'a>(
        self,
        values: &'a [f64],
        scratch: &'a mut Vec<u8>,
        blosc: Option<&BloscCodec>,
    ) -> Result<Cow<'a, [u8]>, CodecError> {
        let bytes: &[u8] = match self.0 {
            TrainDType::F64 => le_bytes(values, scratch),
            TrainDType::F32 => {
                scratch.clear();
                scratch.extend(values.iter().flat_map(|&v| (v as f32).to_le_bytes()));
                scratch
            }
        };
        match blosc {
            None => Ok(Cow::Borrowed(bytes)),
            Some(codec) => Ok(Cow::Owned(compress(codec, bytes)?)),
        }
    }

    /// The values of little-endian bytes (a decoded row), as f64.
    pub(crate) fn values(self, bytes: &[u8]) -> Vec<f64> {
        match self.0 {
            TrainDType::F64 => bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
            TrainDType::F32 => bytes
                .chunks_exact(4)
                .map(|b| f64::from(f32::from_le_bytes(b.try_into().expect("4 bytes"))))
                .collect(),
        }
    }

    /// Stores `values` as chunk `chunk` of a one-chunk array (the data sets).
    pub(crate) fn store_chunk(
        self,
        array: &Array<FilesystemStore>,
        chunk: &[u64],
        values: &[f64],
    ) -> Result<(), ArrayError> {
        match self.0 {
            TrainDType::F64 => array.store_chunk_opt(chunk, values, &keep_all()),
            TrainDType::F32 => {
                let narrow: Vec<f32> = values.iter().map(|&v| v as f32).collect();
                array.store_chunk_opt(chunk, &narrow[..], &keep_all())
            }
        }
    }
}

/// Compresses the little-endian bytes of a row with the array's blosc codec.
pub(crate) fn compress(codec: &BloscCodec, bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
    Ok(codec
        .encode(Cow::Borrowed(bytes), &keep_all())?
        .into_owned())
}

/// The little-endian bytes of an int64 row.
pub(crate) fn encode_ints<'a>(values: &'a [i64], scratch: &'a mut Vec<u8>) -> &'a [u8] {
    le_bytes(values, scratch)
}

/// The values of an int64 row's little-endian bytes.
pub(crate) fn ints(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect()
}

/// The little-endian bytes of `values`: the values themselves on a little-endian machine
/// (no copy of a million-weight row), else a byte-swapped copy in `scratch`.
fn le_bytes<'a, T: bytemuck::Pod>(values: &'a [T], scratch: &'a mut Vec<u8>) -> &'a [u8] {
    let bytes: &[u8] = bytemuck::cast_slice(values);
    if cfg!(target_endian = "little") {
        return bytes;
    }
    scratch.clear();
    scratch.extend_from_slice(bytes);
    for value in scratch.chunks_exact_mut(size_of::<T>()) {
        value.reverse();
    }
    scratch
}

/// The most bytes an encoded row of `len` raw bytes may take: blosc adds at most a 16-byte
/// header to incompressible data.
pub(crate) fn max_encoded_len(len: u64, blosc: bool) -> u64 {
    if blosc { len + 16 } else { len }
}

/// Decodes a row of `len` raw bytes of `width`-byte values; rows that were not
/// blosc-compressed are their raw bytes already.
pub(crate) fn decode_row(
    bytes: Vec<u8>,
    blosc_compressed: bool,
    len: u64,
    width: usize,
) -> Result<Vec<u8>, CodecError> {
    if !blosc_compressed {
        return Ok(bytes);
    }
    // A blosc frame describes itself, so any blosc configuration decodes.
    Ok(blosc(width)
        .decode(
            Cow::Owned(bytes),
            &BytesRepresentation::FixedSize(len),
            &one_thread(),
        )?
        .into_owned())
}

/// Every chunk is stored (a fill-valued chunk is data here: an all-zero weight row is real,
/// and a missing chunk means damage), and encoded on the calling thread: zarrs would
/// otherwise encode on rayon's global pool, which Burn's CPU backend trains on.
pub(crate) fn keep_all() -> CodecOptions {
    CodecOptions::default()
        .with_store_empty_chunks(true)
        .with_concurrent_target(1)
}

/// Decodes on the calling thread: a row is small, and replay's own threads read in parallel.
fn one_thread() -> CodecOptions {
    CodecOptions::default().with_concurrent_target(1)
}
