//! The byte-level BPE tokenizer of GPT-2-style GGUF models (`tokenizer.ggml.model = "gpt2"`),
//! loaded from the file's metadata and giving the same token ids as llama.cpp.
//!
//! Encoding follows llama.cpp's pipeline step by step:
//!
//! 1. **Special tokens.** The text is cut at every occurrence of a special token's text, longest
//!    token first. User-defined tokens are always cut out; control and unknown tokens only when
//!    `parse_special` is set (as llama.cpp does for prompts).
//! 2. **Code points.** Each remaining piece is decoded as UTF-8 the lenient way llama.cpp does it:
//!    a malformed sequence becomes U+FFFD and decoding goes on at the next byte.
//! 3. **Pre-tokenizer.** The code points are split into words. For `smollm` (and the other
//!    pre-tokenizers listed in [`PreTokenizer::from_name`]) every number character (`\p{N}`) is a
//!    word of its own first; then GPT-2's pattern
//!    `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` splits the rest,
//!    each piece on its own (the lookahead does not see past a piece's end).
//! 4. **Bytes to symbols.** Each word's UTF-8 bytes become GPT-2's printable byte characters.
//! 5. **BPE.** Adjacent symbols are merged lowest merge rank first (leftmost first among equal
//!    ranks) until no pair has a rank; each symbol is then looked up in the vocabulary.
//!
//! Decoding maps tokens back to bytes ([`Tokenizer::decode_bytes`]); a token may end in the middle
//! of a UTF-8 character, which [`Utf8Stream`] buffers for streaming output.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use wattle::gguf::{GgufFile, Value};

/// `tokenizer.ggml.model`
const KEY_MODEL: &str = "tokenizer.ggml.model";
/// `tokenizer.ggml.pre`
const KEY_PRE: &str = "tokenizer.ggml.pre";
/// `tokenizer.ggml.tokens`
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
/// `tokenizer.ggml.token_type`
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
/// `tokenizer.ggml.merges`
const KEY_MERGES: &str = "tokenizer.ggml.merges";

/// Marks "no id" in the dense lookup tables.
const NONE: u32 = u32::MAX;

/// Why a tokenizer could not be loaded.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TokenizerError {
    /// A required metadata key is absent.
    MissingKey(&'static str),
    /// A metadata key holds a value of another type than the one expected.
    WrongType {
        /// The key.
        key: &'static str,
        /// What it should hold.
        expected: &'static str,
    },
    /// `tokenizer.ggml.model` names a tokenizer other than `gpt2`.
    UnsupportedModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer that is not implemented (or is absent).
    UnsupportedPre(String),
    /// A merge rule that is not two symbols separated by a space.
    BadMerge {
        /// Its rank (index in `tokenizer.ggml.merges`).
        index: usize,
        /// Its text.
        text: String,
    },
    /// `tokenizer.ggml.token_type` does not have one entry per token.
    TokenTypeCount {
        /// Number of tokens.
        tokens: usize,
        /// Number of token types.
        types: usize,
    },
    /// The vocabulary is empty or too large for 32-bit ids.
    VocabSize(usize),
}

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenizerError::MissingKey(k) => write!(f, "the model has no `{k}` metadata"),
            TokenizerError::WrongType { key, expected } => {
                write!(f, "metadata `{key}` is not {expected}")
            }
            TokenizerError::UnsupportedModel(m) => write!(
                f,
                "unsupported tokenizer model {m:?} (only \"gpt2\", byte-level BPE, is implemented)"
            ),
            TokenizerError::UnsupportedPre(p) => {
                write!(f, "unsupported pre-tokenizer {p:?} (`{KEY_PRE}`)")
            }
            TokenizerError::BadMerge { index, text } => write!(
                f,
                "bad merge rule #{index} {text:?} in `{KEY_MERGES}`: expected two symbols separated by a space"
            ),
            TokenizerError::TokenTypeCount { tokens, types } => write!(
                f,
                "`{KEY_TOKEN_TYPE}` has {types} entries for {tokens} tokens"
            ),
            TokenizerError::VocabSize(n) => write!(f, "unusable vocabulary size {n}"),
        }
    }
}

impl std::error::Error for TokenizerError {}

/// A token's type as GGUF numbers it (`tokenizer.ggml.token_type`, llama.cpp's `llama_token_type`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TokenType {
    /// 0, or any number not listed here.
    Undefined,
    /// 1: ordinary text.
    Normal,
    /// 2: the unknown token.
    Unknown,
    /// 3: control tokens such as `<|im_start|>`: no text unless asked for.
    Control,
    /// 4: user-defined tokens: always matched in the input, always printed.
    UserDefined,
    /// 5: unused slots.
    Unused,
    /// 6: byte tokens (`<0x0A>`, SentencePiece vocabularies).
    Byte,
}

impl TokenType {
    /// The type numbered `v` in a file.
    pub fn from_number(v: i64) -> TokenType {
        match v {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }
}

/// How text is split into words before BPE (`tokenizer.ggml.pre`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PreTokenizer {
    /// GPT-2's pattern alone.
    Gpt2,
    /// Every `\p{N}` character on its own, then GPT-2's pattern (SmolLM, StarCoder).
    DigitsThenGpt2,
}

impl PreTokenizer {
    /// The pre-tokenizer llama.cpp uses for a `tokenizer.ggml.pre` value, among those implemented
    /// here (the names llama.cpp maps to exactly these patterns). Only `smollm` is checked against
    /// llama.cpp in the tests.
    pub fn from_name(pre: &str) -> Option<PreTokenizer> {
        match pre {
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" => Some(PreTokenizer::DigitsThenGpt2),
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "exaone4" | "mpt" | "olmo" | "jais"
            | "trillion" | "granite-docling" => Some(PreTokenizer::Gpt2),
            _ => None,
        }
    }
}

/// Token texts that llama.cpp treats as end-of-generation (and so as control tokens, whatever
/// type the file gives them).
const EOG_TEXTS: [&str; 12] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// Token texts that llama.cpp always treats as user-defined (gpt-oss's chat markup).
const USER_DEFINED_TEXTS: [&str; 4] = ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

/// A byte-level BPE tokenizer read from a GGUF file's `tokenizer.ggml.*` metadata.
pub struct Tokenizer {
    /// Token id → its text as stored (GPT-2 byte characters for ordinary tokens).
    texts: Vec<String>,
    /// Token id → type.
    types: Vec<TokenType>,
    /// Token id → the bytes it stands for (for control and unknown tokens, their text).
    pieces: Vec<Vec<u8>>,
    /// Token text → id (the last id when a text repeats, as llama.cpp does).
    text_to_id: HashMap<String, u32>,
    /// BPE symbol id → its text (symbols are the byte characters and every merge's parts).
    sym_text: Vec<String>,
    /// BPE symbol id → token id, or `NONE`.
    sym_token: Vec<u32>,
    /// (left symbol, right symbol) → (rank, merged symbol).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Byte → the symbol of its GPT-2 byte character.
    byte_sym: [u32; 256],
    /// Byte → the token whose text is that single byte (ASCII only), or `NONE`: llama.cpp's
    /// fallback for a final symbol that is not in the vocabulary.
    byte_token: [u32; 256],
    /// Control, user-defined and unknown tokens, longest text first.
    specials: Vec<u32>,
    /// End-of-generation tokens.
    eog: Vec<u32>,
    pre: PreTokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("n_vocab", &self.texts.len())
            .field("n_merges", &self.merges.len())
            .field("pre", &self.pre)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .finish()
    }
}

/// The value of `key` as a string.
fn get_str<'a>(f: &'a GgufFile, key: &'static str) -> Result<Option<&'a str>, TokenizerError> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or(TokenizerError::WrongType {
            key,
            expected: "a string",
        }),
    }
}

/// The value of `key` as an array of strings.
fn get_str_array<'a>(
    f: &'a GgufFile,
    key: &'static str,
) -> Result<Option<Vec<&'a str>>, TokenizerError> {
    let wrong = TokenizerError::WrongType {
        key,
        expected: "an array of strings",
    };
    let Some(v) = f.get(key) else {
        return Ok(None);
    };
    let items = v.as_array().ok_or_else(|| wrong.clone())?;
    items
        .iter()
        .map(|s| s.as_str().ok_or_else(|| wrong.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Any integer value as i64.
fn as_i64(v: &Value) -> Option<i64> {
    match *v {
        Value::I8(x) => Some(x.into()),
        Value::I16(x) => Some(x.into()),
        Value::I32(x) => Some(x.into()),
        Value::I64(x) => Some(x),
        _ => v.as_u64().and_then(|x| i64::try_from(x).ok()),
    }
}

/// The value of `key` as a bool.
fn get_bool(f: &GgufFile, key: &'static str) -> Result<Option<bool>, TokenizerError> {
    match f.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(TokenizerError::WrongType {
            key,
            expected: "a bool",
        }),
    }
}

/// A special token id from `key`: an id out of the vocabulary keeps the default (llama.cpp warns
/// and does the same).
fn get_id(
    f: &GgufFile,
    key: &'static str,
    default: Option<u32>,
    n_vocab: usize,
) -> Result<Option<u32>, TokenizerError> {
    match f.get(key) {
        None => Ok(default),
        Some(v) => {
            let id = v.as_u64().ok_or(TokenizerError::WrongType {
                key,
                expected: "an unsigned integer",
            })?;
            Ok(if id < n_vocab as u64 {
                Some(id as u32)
            } else {
                default
            })
        }
    }
}

/// GPT-2's byte → character map: the printable bytes keep their code point, the others (controls,
/// space, DEL, the C1 range, NBSP and soft hyphen) take 256, 257, … in byte order.
fn byte_chars() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in map.iter_mut().enumerate() {
        let printable = matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
        let cp = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        // Every value here is below 0x144, a valid scalar value.
        *slot = char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER);
    }
    map
}

/// The inverse of [`byte_chars`], as code point → byte.
fn char_bytes() -> HashMap<char, u8> {
    byte_chars()
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect()
}

/// Interns BPE symbol texts.
#[derive(Default)]
struct Symbols {
    ids: HashMap<String, u32>,
    texts: Vec<String>,
}

impl Symbols {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.texts.len() as u32;
        self.texts.push(s.to_owned());
        self.ids.insert(s.to_owned(), id);
        id
    }
}

impl Tokenizer {
    /// Opens a GGUF file and loads its tokenizer.
    pub fn open(path: impl AsRef<Path>) -> Result<Tokenizer, String> {
        let path = path.as_ref();
        let f = GgufFile::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Tokenizer::from_gguf(&f).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Loads the tokenizer of an open GGUF file.
    pub fn from_gguf(f: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        let model = get_str(f, KEY_MODEL)?.ok_or(TokenizerError::MissingKey(KEY_MODEL))?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.to_owned()));
        }
        let pre_name = get_str(f, KEY_PRE)?;
        let pre = pre_name.and_then(PreTokenizer::from_name).ok_or_else(|| {
            TokenizerError::UnsupportedPre(
                pre_name.unwrap_or("(absent: llama.cpp's default)").into(),
            )
        })?;

        let tokens = get_str_array(f, KEY_TOKENS)?.ok_or(TokenizerError::MissingKey(KEY_TOKENS))?;
        let n = tokens.len();
        if n == 0 || n >= NONE as usize {
            return Err(TokenizerError::VocabSize(n));
        }
        let mut types = match f.get(KEY_TOKEN_TYPE) {
            None => vec![TokenType::Normal; n],
            Some(v) => {
                let wrong = TokenizerError::WrongType {
                    key: KEY_TOKEN_TYPE,
                    expected: "an array of integers",
                };
                let items = v.as_array().ok_or_else(|| wrong.clone())?;
                if items.len() != n {
                    return Err(TokenizerError::TokenTypeCount {
                        tokens: n,
                        types: items.len(),
                    });
                }
                items
                    .iter()
                    .map(|t| {
                        as_i64(t)
                            .map(TokenType::from_number)
                            .ok_or_else(|| wrong.clone())
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
        };

        // Token texts; llama.cpp names empty ones so that they never match.
        let texts: Vec<String> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if t.is_empty() {
                    format!("[EMPTY_{i}]")
                } else {
                    (*t).to_owned()
                }
            })
            .collect();
        let mut text_to_id = HashMap::with_capacity(n);
        for (i, t) in texts.iter().enumerate() {
            text_to_id.insert(t.clone(), i as u32);
        }

        // Type fixes llama.cpp applies by token text.
        for t in EOG_TEXTS {
            if let Some(&id) = text_to_id.get(t) {
                types[id as usize] = TokenType::Control;
            }
        }
        for t in USER_DEFINED_TEXTS {
            if let Some(&id) = text_to_id.get(t) {
                types[id as usize] = TokenType::UserDefined;
            }
        }

        // BPE symbols and merges.
        let chars = byte_chars();
        let mut syms = Symbols::default();
        let mut byte_sym = [0u32; 256];
        for (b, c) in chars.iter().enumerate() {
            byte_sym[b] = syms.intern(c.encode_utf8(&mut [0; 4]));
        }
        let merge_list =
            get_str_array(f, KEY_MERGES)?.ok_or(TokenizerError::MissingKey(KEY_MERGES))?;
        let mut merges = HashMap::with_capacity(merge_list.len());
        for (rank, m) in merge_list.iter().enumerate() {
            // The separator is the first space after the first byte (so a symbol may start with
            // one), as llama.cpp reads it.
            let sep = m
                .as_bytes()
                .iter()
                .skip(1)
                .position(|&b| b == b' ')
                .map(|p| p + 1)
                .ok_or_else(|| TokenizerError::BadMerge {
                    index: rank,
                    text: (*m).to_owned(),
                })?;
            let (left, right) = (&m[..sep], &m[sep + 1..]);
            let l = syms.intern(left);
            let r = syms.intern(right);
            let joined = syms.intern(&format!("{left}{right}"));
            // A repeated pair keeps its first (lowest) rank.
            merges.entry((l, r)).or_insert((rank as u32, joined));
        }
        let sym_token = syms
            .texts
            .iter()
            .map(|s| text_to_id.get(s).copied().unwrap_or(NONE))
            .collect();
        let mut byte_token = [NONE; 256];
        for (b, slot) in byte_token.iter_mut().enumerate().take(0x80) {
            let s = char::from(b as u8).to_string();
            *slot = text_to_id.get(&s).copied().unwrap_or(NONE);
        }

        // Special tokens, longest first (ties by id, so the order is reproducible).
        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                matches!(
                    types[i as usize],
                    TokenType::Control | TokenType::UserDefined | TokenType::Unknown
                )
            })
            .collect();
        specials.sort_by_key(|&i| (Reverse(texts[i as usize].len()), i));

        // Special ids: gpt2's defaults are 11 for both BOS and EOS (llama.cpp's choice).
        let default = (11 < n).then_some(11);
        let bos = get_id(f, "tokenizer.ggml.bos_token_id", default, n)?;
        let eos = get_id(f, "tokenizer.ggml.eos_token_id", default, n)?;
        let unk = get_id(f, "tokenizer.ggml.unknown_token_id", None, n)?;
        let pad = get_id(f, "tokenizer.ggml.padding_token_id", None, n)?;
        let eot = get_id(f, "tokenizer.ggml.eot_token_id", None, n)?;
        // The implemented pre-tokenizers add neither BOS nor EOS unless the file says so.
        let add_bos = get_bool(f, "tokenizer.ggml.add_bos_token")?.unwrap_or(false);
        let add_eos = get_bool(f, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);

        let mut eog: Vec<u32> = EOG_TEXTS
            .iter()
            .filter_map(|t| text_to_id.get(*t).copied())
            .chain(eos)
            .chain(eot)
            .collect();
        eog.sort_unstable();
        eog.dedup();

        let to_bytes = char_bytes();
        let pieces = texts
            .iter()
            .zip(&types)
            .map(|(t, ty)| match ty {
                TokenType::Normal => {
                    let mut out = Vec::with_capacity(t.len());
                    for c in t.chars() {
                        match to_bytes.get(&c) {
                            Some(&b) => out.push(b),
                            // Not a byte character: kept as it is (llama.cpp prints a marker).
                            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                        }
                    }
                    out
                }
                TokenType::Control | TokenType::Unknown | TokenType::UserDefined => {
                    t.as_bytes().to_vec()
                }
                TokenType::Undefined | TokenType::Unused | TokenType::Byte => Vec::new(),
            })
            .collect();

        Ok(Tokenizer {
            texts,
            types,
            pieces,
            text_to_id,
            sym_text: syms.texts,
            sym_token,
            merges,
            byte_sym,
            byte_token,
            specials,
            eog,
            pre,
            bos,
            eos,
            unk,
            pad,
            add_bos,
            add_eos,
        })
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.texts.len()
    }

    /// The pre-tokenizer in use.
    pub fn pre_tokenizer(&self) -> PreTokenizer {
        self.pre
    }

    /// A token's text as stored in the file (GPT-2 byte characters for ordinary tokens).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(String::as_str)
    }

    /// A token's type.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// The id of the token whose stored text is `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.text_to_id.get(text).copied()
    }

    /// The beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// The unknown token.
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }

    /// The padding token.
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }

    /// Whether [`Tokenizer::encode`] with `add_special` puts BOS first
    /// (`tokenizer.ggml.add_bos_token`, default false for the implemented pre-tokenizers).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether [`Tokenizer::encode`] with `add_special` puts EOS last
    /// (`tokenizer.ggml.add_eos_token`, default false).
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Whether generation stops at `id` (EOS, EOT and the end-of-turn tokens llama.cpp knows by
    /// text, such as `<|im_end|>` and `<|endoftext|>`).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// The token ids of `text`, as llama.cpp's `llama_tokenize` gives them.
    ///
    /// `text` may be any bytes: malformed UTF-8 is read as U+FFFD, as llama.cpp does.
    /// `add_special` adds BOS/EOS when the model asks for them ([`Tokenizer::add_bos`],
    /// [`Tokenizer::add_eos`]). `parse_special` makes the text of control tokens (such as
    /// `<|im_start|>`) stand for those tokens; user-defined tokens are matched either way.
    pub fn encode(
        &self,
        text: impl AsRef<[u8]>,
        add_special: bool,
        parse_special: bool,
    ) -> Vec<u32> {
        let text = text.as_ref();
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let mut enc = Encoder::new(self);
        for frag in self.partition(text, parse_special) {
            match frag {
                Fragment::Text(a, b) => enc.text(&text[a..b], &mut out),
                Fragment::Token(id) => out.push(id),
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// The bytes one token stands for. Control and unknown tokens give their text only when
    /// `special` is set; unused, byte and undefined tokens and ids out of range give nothing.
    pub fn token_bytes(&self, id: u32, special: bool) -> &[u8] {
        match self.types.get(id as usize) {
            None => &[],
            Some(TokenType::Control | TokenType::Unknown) if !special => &[],
            Some(_) => &self.pieces[id as usize],
        }
    }

    /// The bytes of a token sequence (the pieces one after another, as llama.cpp's
    /// `llama_token_to_piece`; no space clean-up). See [`Tokenizer::token_bytes`] for `special`.
    pub fn decode_bytes(&self, ids: &[u32], special: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for &id in ids {
            out.extend_from_slice(self.token_bytes(id, special));
        }
        out
    }

    /// The text of a token sequence; bytes that are not valid UTF-8 (a character split across the
    /// sequence's end, say) become U+FFFD. Use [`Tokenizer::decode_bytes`] or [`Utf8Stream`] to
    /// keep them.
    pub fn decode(&self, ids: &[u32], special: bool) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids, special)).into_owned()
    }

    /// Cuts `text` at the special tokens that apply, longest token first.
    fn partition(&self, text: &[u8], parse_special: bool) -> Vec<Fragment> {
        let mut frags = Vec::new();
        if text.is_empty() {
            return frags;
        }
        frags.push(Fragment::Text(0, text.len()));
        for &id in &self.specials {
            let ty = self.types[id as usize];
            if !parse_special && matches!(ty, TokenType::Control | TokenType::Unknown) {
                continue;
            }
            let pat = self.texts[id as usize].as_bytes();
            if !frags
                .iter()
                .any(|f| matches!(f, Fragment::Text(a, b) if find(&text[*a..*b], pat).is_some()))
            {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(a, b) = f else {
                    next.push(f);
                    continue;
                };
                let mut cur = a;
                while let Some(p) = find(&text[cur..b], pat) {
                    if p > 0 {
                        next.push(Fragment::Text(cur, cur + p));
                    }
                    next.push(Fragment::Token(id));
                    cur += p + pat.len();
                }
                if cur < b {
                    next.push(Fragment::Text(cur, b));
                }
            }
            frags = next;
        }
        frags
    }
}

/// A piece of the input after special tokens are cut out.
#[derive(Clone, Copy, Debug)]
enum Fragment {
    /// Text to pre-tokenize, a byte range of the input.
    Text(usize, usize),
    /// A special token.
    Token(u32),
}

/// The first position of `pat` in `hay`.
fn find(hay: &[u8], pat: &[u8]) -> Option<usize> {
    let (&first, rest) = pat.split_first()?;
    if hay.len() < pat.len() {
        return None;
    }
    let last_start = hay.len() - pat.len();
    let mut i = 0;
    while i <= last_start {
        let p = hay[i..=last_start].iter().position(|&b| b == first)? + i;
        if &hay[p + 1..p + pat.len()] == rest {
            return Some(p);
        }
        i = p + 1;
    }
    None
}

/// One encoding call's state: scratch buffers and a cache of words already merged.
struct Encoder<'t> {
    tok: &'t Tokenizer,
    cps: Vec<u32>,
    words: Vec<(usize, usize)>,
    word: Vec<u8>,
    cache: HashMap<Vec<u8>, Vec<u32>>,
    bpe: Bpe,
}

impl<'t> Encoder<'t> {
    fn new(tok: &'t Tokenizer) -> Encoder<'t> {
        Encoder {
            tok,
            cps: Vec::new(),
            words: Vec::new(),
            word: Vec::new(),
            cache: HashMap::new(),
            bpe: Bpe::default(),
        }
    }

    /// Appends the tokens of a piece of text that holds no special token.
    fn text(&mut self, text: &[u8], out: &mut Vec<u32>) {
        decode_lenient(text, &mut self.cps);
        self.words.clear();
        let cls = classes();
        match self.tok.pre {
            PreTokenizer::Gpt2 => split_gpt2(&self.cps, 0, cls, &mut self.words),
            PreTokenizer::DigitsThenGpt2 => {
                let mut start = 0;
                for (i, &c) in self.cps.iter().enumerate() {
                    if cls.class(c) & NUMBER != 0 {
                        split_gpt2(&self.cps[start..i], start, cls, &mut self.words);
                        self.words.push((i, i + 1));
                        start = i + 1;
                    }
                }
                split_gpt2(&self.cps[start..], start, cls, &mut self.words);
            }
        }
        for w in 0..self.words.len() {
            let (a, b) = self.words[w];
            self.word.clear();
            for &c in &self.cps[a..b] {
                push_utf8(c, &mut self.word);
            }
            if let Some(ids) = self.cache.get(&self.word) {
                out.extend_from_slice(ids);
                continue;
            }
            let start = out.len();
            self.bpe.run(self.tok, &self.word, out);
            self.cache.insert(self.word.clone(), out[start..].to_vec());
        }
    }
}

/// Scratch space of the BPE merge loop.
#[derive(Default)]
struct Bpe {
    /// Symbol at each initial position (`NONE` once merged into its left neighbour).
    sym: Vec<u32>,
    /// Next live position (`NONE` at the end).
    next: Vec<u32>,
    /// Previous live position (`NONE` at the start).
    prev: Vec<u32>,
    /// Candidate merges, lowest rank (then leftmost) first.
    heap: BinaryHeap<Reverse<Pair>>,
}

/// A candidate merge: (rank, left position, right position, left symbol, right symbol).
type Pair = (u32, u32, u32, u32, u32);

impl Bpe {
    /// Queues the merge of the symbols at positions `l` and `r`, when the pair has a rank.
    fn offer(&mut self, tok: &Tokenizer, l: u32, r: u32) {
        if l == NONE || r == NONE {
            return;
        }
        let (ls, rs) = (self.sym[l as usize], self.sym[r as usize]);
        if let Some(&(rank, _)) = tok.merges.get(&(ls, rs)) {
            self.heap.push(Reverse((rank, l, r, ls, rs)));
        }
    }

    /// Appends the tokens of one word (its UTF-8 bytes).
    fn run(&mut self, tok: &Tokenizer, word: &[u8], out: &mut Vec<u32>) {
        let n = word.len();
        if n == 0 {
            return;
        }
        self.sym.clear();
        self.sym
            .extend(word.iter().map(|&b| tok.byte_sym[b as usize]));
        self.next.clear();
        self.next
            .extend((1..=n as u32).map(|i| if i as usize == n { NONE } else { i }));
        self.prev.clear();
        self.prev
            .extend((0..n as u32).map(|i| i.checked_sub(1).unwrap_or(NONE)));
        self.heap.clear();
        for i in 1..n as u32 {
            self.offer(tok, i - 1, i);
        }
        while let Some(Reverse((_, l, r, ls, rs))) = self.heap.pop() {
            // Stale when either side has changed since the pair was queued.
            if self.sym[l as usize] != ls || self.sym[r as usize] != rs {
                continue;
            }
            let Some(&(_, joined)) = tok.merges.get(&(ls, rs)) else {
                continue;
            };
            self.sym[l as usize] = joined;
            self.sym[r as usize] = NONE;
            let after = self.next[r as usize];
            self.next[l as usize] = after;
            if after != NONE {
                self.prev[after as usize] = l;
            }
            let before = self.prev[l as usize];
            self.offer(tok, before, l);
            self.offer(tok, l, after);
        }
        let mut i = 0u32;
        while i != NONE {
            let s = self.sym[i as usize];
            match tok.sym_token[s as usize] {
                NONE => {
                    // Not in the vocabulary: llama.cpp looks each byte of the text up alone.
                    for &b in tok.sym_text[s as usize].as_bytes() {
                        let t = tok.byte_token[b as usize];
                        if t != NONE {
                            out.push(t);
                        }
                    }
                }
                t => out.push(t),
            }
            i = self.next[i as usize];
        }
    }
}

/// Decodes UTF-8 into code points as llama.cpp does: the lead byte gives the length, the
/// continuation bytes must be `10xxxxxx`, nothing else is checked (no overlong or surrogate test);
/// a malformed sequence gives U+FFFD and decoding resumes at the next byte.
fn decode_lenient(bytes: &[u8], out: &mut Vec<u32>) {
    out.clear();
    let cont = |i: usize| bytes.get(i).is_some_and(|&b| b & 0xC0 == 0x80);
    let low = |i: usize| u32::from(bytes[i] & 0x3F);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (cp, len) = if b < 0x80 {
            (u32::from(b), 1)
        } else if b & 0x40 == 0 {
            (0xFFFD, 1)
        } else if b & 0x20 == 0 {
            if cont(i + 1) {
                ((u32::from(b & 0x1F) << 6) | low(i + 1), 2)
            } else {
                (0xFFFD, 1)
            }
        } else if b & 0x10 == 0 {
            if cont(i + 1) && cont(i + 2) {
                (
                    (u32::from(b & 0x0F) << 12) | (low(i + 1) << 6) | low(i + 2),
                    3,
                )
            } else {
                (0xFFFD, 1)
            }
        } else if b & 0x08 == 0 {
            if cont(i + 1) && cont(i + 2) && cont(i + 3) {
                let cp = (u32::from(b & 0x07) << 18)
                    | (low(i + 1) << 12)
                    | (low(i + 2) << 6)
                    | low(i + 3);
                (cp, 4)
            } else {
                (0xFFFD, 1)
            }
        } else {
            (0xFFFD, 1)
        };
        out.push(cp);
        i += len;
    }
}

/// Appends the UTF-8 form of a code point (surrogates included, as llama.cpp writes them; values
/// past U+10FFFF, which llama.cpp refuses, become U+FFFD).
fn push_utf8(cp: u32, out: &mut Vec<u8>) {
    match cp {
        0..=0x7F => out.push(cp as u8),
        0x80..=0x7FF => out.extend_from_slice(&[0xC0 | (cp >> 6) as u8, 0x80 | (cp & 0x3F) as u8]),
        0x800..=0xFFFF => out.extend_from_slice(&[
            0xE0 | (cp >> 12) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]),
        0x10000..=0x10FFFF => out.extend_from_slice(&[
            0xF0 | (cp >> 18) as u8,
            0x80 | ((cp >> 12) & 0x3F) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]),
        _ => out.extend_from_slice("\u{FFFD}".as_bytes()),
    }
}

/// Class bit: a letter (`\p{L}`).
const LETTER: u8 = 1;
/// Class bit: a number (`\p{N}`).
const NUMBER: u8 = 2;
/// Class bit: white space (`\s`: Unicode's White_Space property).
const SPACE: u8 = 4;

/// The character classes the pre-tokenizer needs, for every code point.
struct Classes {
    /// U+0000 … U+FFFF, one entry each.
    bmp: Vec<u8>,
    /// Sorted ranges (first, last, class) above U+FFFF.
    astral: Vec<(u32, u32, u8)>,
}

impl Classes {
    /// The class bits of a code point (0 for anything else, such as punctuation, symbols, marks,
    /// unassigned code points and values that are not code points).
    fn class(&self, cp: u32) -> u8 {
        if let Some(&c) = self.bmp.get(cp as usize) {
            return c;
        }
        let i = self.astral.partition_point(|&(_, last, _)| last < cp);
        match self.astral.get(i) {
            Some(&(first, _, c)) if first <= cp => c,
            _ => 0,
        }
    }
}

/// The code point ranges of a Unicode class written as a regex (`\p{L}`), from regex-syntax's
/// tables.
fn unicode_ranges(class: &str) -> Vec<(u32, u32)> {
    use regex_syntax::hir::{Class, HirKind};
    let Ok(hir) = regex_syntax::Parser::new().parse(class) else {
        return Vec::new();
    };
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => c
            .ranges()
            .iter()
            .map(|r| (u32::from(r.start()), u32::from(r.end())))
            .collect(),
        _ => Vec::new(),
    }
}

/// The class table, built on first use.
fn classes() -> &'static Classes {
    static CLASSES: OnceLock<Classes> = OnceLock::new();
    CLASSES.get_or_init(|| {
        let mut bmp = vec![0u8; 0x10000];
        let mut astral = Vec::new();
        for (class, bit) in [(r"\p{L}", LETTER), (r"\p{N}", NUMBER)] {
            for (first, last) in unicode_ranges(class) {
                for cp in first..=last.min(0xFFFF) {
                    bmp[cp as usize] |= bit;
                }
                if last > 0xFFFF {
                    astral.push((first.max(0x10000), last, bit));
                }
            }
        }
        astral.sort_unstable();
        for (cp, slot) in bmp.iter_mut().enumerate() {
            if char::from_u32(cp as u32).is_some_and(char::is_whitespace) {
                *slot |= SPACE;
            }
        }
        Classes { bmp, astral }
    })
}

/// Splits one piece of code points with GPT-2's pattern, pushing each word's range (offset by
/// `base`). The pattern's lookahead `\s+(?!\S)` sees only this piece.
fn split_gpt2(cps: &[u32], base: usize, cls: &Classes, words: &mut Vec<(usize, usize)>) {
    let n = cps.len();
    let class_at = |i: usize| cps.get(i).map(|&c| cls.class(c));
    let mut pos = 0;
    while pos < n {
        let start = pos;
        let c = cps[pos];
        // 's|'t|'re|'ve|'m|'ll|'d (lowercase only)
        if c == u32::from(b'\'') && pos + 1 < n {
            let c1 = char::from_u32(cps[pos + 1]).unwrap_or('\0');
            let c2 = cps
                .get(pos + 2)
                .and_then(|&c| char::from_u32(c))
                .unwrap_or('\0');
            let len = match (c1, c2) {
                ('s' | 't' | 'm' | 'd', _) => 2,
                ('r', 'e') | ('v', 'e') | ('l', 'l') => 3,
                _ => 0,
            };
            if len > 0 {
                pos += len;
                words.push((base + start, base + pos));
                continue;
            }
        }
        // An optional space, then a run of letters, of numbers or of other non-space characters.
        let lead = usize::from(c == u32::from(b' '));
        if let Some(k) = class_at(pos + lead) {
            let run = if k & LETTER != 0 {
                Some(LETTER)
            } else if k & NUMBER != 0 {
                Some(NUMBER)
            } else if k & SPACE == 0 {
                Some(0)
            } else {
                None
            };
            if let Some(run) = run {
                pos += lead;
                while let Some(k) = class_at(pos) {
                    let same = if run == 0 {
                        k & (LETTER | NUMBER | SPACE) == 0
                    } else {
                        k & run != 0
                    };
                    if !same {
                        break;
                    }
                    pos += 1;
                }
                words.push((base + start, base + pos));
                continue;
            }
        }
        // White space: \s+(?!\S) leaves the last one to start the next word when more follows;
        // \s+ takes the rest.
        let mut spaces = 0;
        while class_at(pos + spaces).is_some_and(|k| k & SPACE != 0) {
            spaces += 1;
        }
        pos += if spaces > 1 && pos + spaces < n {
            spaces - 1
        } else {
            spaces.max(1)
        };
        words.push((base + start, base + pos));
    }
}

/// Turns a stream of token bytes into text, holding back a UTF-8 character split across tokens
/// until its last byte arrives.
#[derive(Default, Debug)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// A stream with nothing pending.
    pub fn new() -> Utf8Stream {
        Utf8Stream::default()
    }

    /// Adds bytes and returns the text that is complete so far. Malformed bytes become U+FFFD;
    /// an incomplete character at the end waits for the next call.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let keep = incomplete_tail(&self.pending);
        let done = self.pending.len() - keep;
        let text = String::from_utf8_lossy(&self.pending[..done]).into_owned();
        self.pending.drain(..done);
        text
    }

    /// Ends the stream: the bytes still pending (an unfinished character) as U+FFFD.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// How many bytes at the end of `b` begin a character that more bytes could complete.
fn incomplete_tail(b: &[u8]) -> usize {
    // A character has at most 4 bytes: its lead byte is among the last 3 if it is unfinished.
    for back in 1..=b.len().min(3) {
        let tail = &b[b.len() - back..];
        if tail[0] & 0xC0 == 0x80 {
            continue;
        }
        return match std::str::from_utf8(tail) {
            Err(e) if e.valid_up_to() == 0 && e.error_len().is_none() => back,
            _ => 0,
        };
    }
    0
}

/// `wattle tokenize MODEL FILE`: prints the token ids of FILE (its bytes as they are, special-token
/// text not parsed, BOS/EOS as the model asks), separated by spaces, then a newline.
pub fn run(model: &Path, file: &Path) -> Result<(), String> {
    use std::io::Write;
    let tok = Tokenizer::open(model)?;
    let text = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let ids = tok.encode(&text, true, false);
    let mut line = String::with_capacity(ids.len() * 6 + 1);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        line.push_str(&id.to_string());
    }
    line.push('\n');
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing the ids: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattle::gguf::{GgufWriter, ValueType};

    /// The SmolLM2 GGUF when `tools/fetch-model.sh` has cached it (`$WATTLE_MODELS`, default
    /// `$TMPDIR/wattle-models`); tests never download it.
    fn smollm2() -> Option<Tokenizer> {
        let dir = std::env::var_os("WATTLE_MODELS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("wattle-models"));
        let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
        if !path.exists() {
            eprintln!("tokenizer: SmolLM2 GGUF not found (WATTLE_MODELS): skipped");
            return None;
        }
        Some(Tokenizer::open(&path).expect("load SmolLM2's tokenizer"))
    }

    fn edge_text() -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tokenize_edge.txt");
        std::fs::read(path).expect("tests/data/tokenize_edge.txt")
    }

    fn strings(items: &[&str]) -> Value {
        Value::Array {
            elem: ValueType::String,
            items: items.iter().map(|s| Value::String((*s).into())).collect(),
        }
    }

    /// A GGUF holding a small tokenizer: the 256 byte characters, a few merges, `<|s|>` (control)
    /// and `<u>` (user-defined); `edit` changes the metadata before it is written.
    fn tiny(edit: impl FnOnce(&mut GgufWriter)) -> Result<Tokenizer, TokenizerError> {
        let chars = byte_chars();
        let mut tokens: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o", "a a"];
        for m in merges {
            tokens.push(m.replace(' ', ""));
        }
        tokens.push("<|s|>".into());
        tokens.push("<u>".into());
        let n = tokens.len();
        let mut types = vec![Value::I32(1); n];
        types[n - 2] = Value::I32(3);
        types[n - 1] = Value::I32(4);
        let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let mut w = GgufWriter::new();
        w.set(KEY_MODEL, Value::String("gpt2".into()));
        w.set(KEY_PRE, Value::String("smollm".into()));
        w.set(KEY_TOKENS, strings(&token_refs));
        w.set(
            KEY_TOKEN_TYPE,
            Value::Array {
                elem: ValueType::I32,
                items: types,
            },
        );
        w.set(KEY_MERGES, strings(&merges));
        w.set("tokenizer.ggml.bos_token_id", Value::U32(n as u32 - 2));
        edit(&mut w);
        let mut bytes = Vec::new();
        w.write_to(&mut bytes).expect("write GGUF");
        let f = GgufFile::from_bytes(&bytes).expect("read GGUF");
        Tokenizer::from_gguf(&f)
    }

    fn words(text: &str) -> Vec<String> {
        let cps: Vec<u32> = text.chars().map(u32::from).collect();
        let mut w = Vec::new();
        split_gpt2(&cps, 0, classes(), &mut w);
        w.iter()
            .map(|&(a, b)| text.chars().skip(a).take(b - a).collect())
            .collect()
    }

    #[test]
    fn byte_characters_are_gpt2s() {
        let chars = byte_chars();
        assert_eq!(chars[b' ' as usize], 'Ġ');
        assert_eq!(chars[b'\n' as usize], 'Ċ');
        assert_eq!(chars[b'a' as usize], 'a');
        assert_eq!(chars[0xAD], '\u{143}');
        let back = char_bytes();
        assert_eq!(back.len(), 256, "the map is one to one");
        assert!((0..=255u8).all(|b| back[&chars[b as usize]] == b));
    }

    #[test]
    fn character_classes() {
        let c = classes();
        let class = |ch: char| c.class(u32::from(ch));
        for ch in ['a', 'Z', 'é', 'Ж', '日', 'ا', '한', '𝐀', 'ǅ', 'ʰ'] {
            assert_eq!(class(ch), LETTER, "{ch:?}");
        }
        for ch in ['0', '9', '٣', '½', '²', 'Ⅻ', '१', '𝟘'] {
            assert_eq!(class(ch), NUMBER, "{ch:?}");
        }
        for ch in [
            ' ', '\t', '\n', '\r', '\u{b}', '\u{85}', '\u{a0}', '\u{3000}', '\u{2028}',
        ] {
            assert_eq!(class(ch), SPACE, "{ch:?}");
        }
        // Marks, symbols, punctuation, format characters: none of the three.
        for ch in [
            '\u{301}', 'Ⓐ', '.', '\'', '😀', '\u{200b}', '\u{200d}', '\u{1c}',
        ] {
            assert_eq!(class(ch), 0, "{ch:?}");
        }
        assert_eq!(c.class(0x10FFFF), 0);
        assert_eq!(c.class(0x1F_FFFF), 0);
    }

    #[test]
    fn gpt2_pattern_splits_like_the_regex() {
        assert_eq!(words("Hello world"), ["Hello", " world"]);
        assert_eq!(
            words("I'm can't we'll"),
            ["I", "'m", " can", "'t", " we", "'ll"]
        );
        assert_eq!(words("IT'S 'x"), ["IT", "'", "S", " '", "x"]);
        assert_eq!(words("a  b"), ["a", " ", " b"]);
        assert_eq!(words("a   \n b"), ["a", "   \n", " b"]);
        assert_eq!(words("x  "), ["x", "  "]);
        assert_eq!(words("\n\n\nz"), ["\n\n", "\n", "z"]);
        assert_eq!(words(" \tz"), [" ", "\t", "z"]);
        assert_eq!(words("3.14 ok!?"), ["3", ".", "14", " ok", "!?"]);
        assert_eq!(words("  leading"), [" ", " leading"]);
        assert_eq!(words("é\u{301}x"), ["é", "\u{301}", "x"]);
        assert_eq!(words(""), Vec::<String>::new());
    }

    #[test]
    fn lenient_utf8_like_llamacpp() {
        let mut cps = Vec::new();
        decode_lenient("aé€😀".as_bytes(), &mut cps);
        assert_eq!(cps, [0x61, 0xE9, 0x20AC, 0x1F600]);
        // Stray continuation, truncated sequences, bad lead byte: U+FFFD each, one byte at a time.
        decode_lenient(b"\x80x\xe2\x82y\xff", &mut cps);
        assert_eq!(cps, [0xFFFD, 0x78, 0xFFFD, 0xFFFD, 0x79, 0xFFFD]);
        // Overlong forms and surrogates are not checked.
        decode_lenient(b"\xc0\x80\xed\xa0\x80", &mut cps);
        assert_eq!(cps, [0, 0xD800]);
        let mut out = Vec::new();
        for &c in &cps {
            push_utf8(c, &mut out);
        }
        assert_eq!(out, b"\0\xed\xa0\x80");
        out.clear();
        push_utf8(0x1F_FFFF, &mut out);
        assert_eq!(out, "\u{FFFD}".as_bytes());
    }

    #[test]
    fn utf8_stream_holds_split_characters() {
        let text = "aé€😀z";
        let mut s = Utf8Stream::new();
        let mut got = String::new();
        for b in text.as_bytes() {
            got += &s.push(std::slice::from_ref(b));
        }
        got += &s.finish();
        assert_eq!(got, text);
        // A malformed byte is replaced at once; an unfinished character only at the end.
        assert_eq!(s.push(b"x\xffy\xe2\x82"), "x\u{FFFD}y");
        assert_eq!(s.finish(), "\u{FFFD}");
    }

    #[test]
    fn tiny_vocabulary_merges_by_rank() {
        let t = tiny(|_| {}).unwrap();
        let id = |s: &str| t.token_id(s).unwrap();
        assert_eq!(t.encode("hello", false, false), [id("hello")]);
        assert_eq!(
            t.encode("hello world", false, false),
            [id("hello"), id("Ġwo"), id("r"), id("l"), id("d")]
        );
        // Equal ranks merge leftmost first: "aaa" is "aa" "a".
        assert_eq!(t.encode("aaa", false, false), [id("aa"), id("a")]);
        // Digits are words of their own.
        assert_eq!(t.encode("h1e", false, false), [id("h"), id("1"), id("e")]);
        assert_eq!(
            t.decode(&t.encode("hello world", false, false), false),
            "hello world"
        );
        assert!(t.encode("", true, true).is_empty());
    }

    #[test]
    fn tiny_vocabulary_special_tokens() {
        let t = tiny(|_| {}).unwrap();
        let (s, u) = (t.token_id("<|s|>").unwrap(), t.token_id("<u>").unwrap());
        assert_eq!(t.token_type(s), Some(TokenType::Control));
        // Control text is a token only with parse_special; user-defined text always.
        let plain = t.encode("he<|s|>he<u>", false, false);
        assert!(!plain.contains(&s) && plain.contains(&u), "{plain:?}");
        let parsed = t.encode("he<|s|>he<u>", false, true);
        let he = t.token_id("he").unwrap();
        assert_eq!(parsed, [he, s, he, u]);
        assert_eq!(t.decode(&parsed, false), "hehe<u>");
        assert_eq!(t.decode(&parsed, true), "he<|s|>he<u>");
        // BOS only when the model asks for it.
        assert_eq!(t.encode("he", true, false), [he]);
        let b = tiny(|w| w.set("tokenizer.ggml.add_bos_token", Value::Bool(true))).unwrap();
        assert_eq!(b.encode("he", true, false), [s, he]);
        assert_eq!(b.encode("he", false, false), [he]);
    }

    #[test]
    fn clear_errors() {
        let err = |edit: fn(&mut GgufWriter)| tiny(edit).unwrap_err().to_string();
        let e = err(|w| w.set(KEY_MODEL, Value::String("llama".into())));
        assert!(e.contains("unsupported tokenizer model \"llama\""), "{e}");
        let e = err(|w| w.set(KEY_PRE, Value::String("qwen2".into())));
        assert!(e.contains("unsupported pre-tokenizer \"qwen2\""), "{e}");
        let e = err(|w| w.set(KEY_MERGES, strings(&["h e", "ll"])));
        assert!(e.contains("bad merge rule #1 \"ll\""), "{e}");
        let e = err(|w| w.set(KEY_MERGES, Value::U32(3)));
        assert!(e.contains("is not an array of strings"), "{e}");
        let e = err(|w| {
            w.set(
                KEY_TOKEN_TYPE,
                Value::Array {
                    elem: ValueType::I32,
                    items: vec![],
                },
            )
        });
        assert!(e.contains("has 0 entries for 265 tokens"), "{e}");
        let e = err(|w| w.set(KEY_TOKENS, strings(&[])));
        assert!(e.contains("vocabulary size 0"), "{e}");
        let mut w = GgufWriter::new();
        w.set("general.architecture", Value::String("llama".into()));
        let mut bytes = Vec::new();
        w.write_to(&mut bytes).unwrap();
        let e = Tokenizer::from_gguf(&GgufFile::from_bytes(&bytes).unwrap()).unwrap_err();
        assert_eq!(e, TokenizerError::MissingKey(KEY_MODEL));
    }

    #[test]
    fn smollm2_metadata() {
        let Some(t) = smollm2() else { return };
        assert_eq!(t.n_vocab(), 49152);
        assert_eq!(t.pre_tokenizer(), PreTokenizer::DigitsThenGpt2);
        assert_eq!(
            (t.bos(), t.eos(), t.unk(), t.pad()),
            (Some(1), Some(2), Some(0), Some(2))
        );
        assert!(!t.add_bos() && !t.add_eos());
        assert_eq!(t.token_text(1), Some("<|im_start|>"));
        assert!(t.is_eog(0) && t.is_eog(2) && !t.is_eog(1));
    }

    #[test]
    fn smollm2_round_trip() {
        let Some(t) = smollm2() else { return };
        let mut texts = vec![edge_text()];
        let gpl = Path::new("/usr/share/common-licenses/GPL-3");
        if let Ok(b) = std::fs::read(gpl) {
            texts.push(b);
        }
        for text in &texts {
            let ids = t.encode(text, true, false);
            assert_eq!(t.decode_bytes(&ids, false), *text);
            // Token by token through the stream buffer, as generation prints.
            let mut s = Utf8Stream::new();
            let mut out = String::new();
            for &id in &ids {
                out += &s.push(t.token_bytes(id, false));
            }
            out += &s.finish();
            assert_eq!(out.as_bytes(), &text[..]);
            // Parsing special text and printing it back also round-trips.
            let ids = t.encode(text, false, true);
            assert_eq!(t.decode_bytes(&ids, true), *text);
        }
    }

    #[test]
    fn smollm2_chat_prompt() {
        let Some(t) = smollm2() else { return };
        let prompt = "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n";
        let ids = t.encode(prompt, true, true);
        assert_eq!(ids.first(), Some(&1));
        assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 2);
        assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 1);
        assert_eq!(t.decode(&ids, false), "user\nHi!\nassistant\n");
        assert_eq!(t.decode(&ids, true), prompt);
        let plain = t.encode(prompt, true, false);
        assert!(!plain.contains(&1) && !plain.contains(&2));
        assert_eq!(t.decode(&plain, false), prompt);
    }
}
