//! The rated tweets of Hutto & Gilbert (ICWSM 2014), `data/tweets/`: reading, a word
//! tokenizer, the vocabulary, token ids, and the counterfactual edits of one tweet.

use anyhow::{Context, Result, bail};
use epk::recorder::models::PAD;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// The id of a word outside the vocabulary.
pub const UNKNOWN: usize = 1;

/// One tweet: its text and its label (1 when the mean human rating is above 0, 0 below).
pub struct Tweet {
    pub text: String,
    pub label: i64,
}

/// Reads `tweets_GroundTruth.txt.gz` (id, mean rating, text; tab-separated) and drops the
/// tweets rated exactly 0, which have no sign.
pub fn load(path: &Path) -> Result<Vec<Tweet>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .with_context(|| format!("{}: not gzip-compressed text", path.display()))?;
    let mut tweets = Vec::new();
    for (line, row) in text
        .lines()
        .enumerate()
        .filter(|(_, r)| !r.trim().is_empty())
    {
        let fields: Vec<&str> = row.trim_end_matches('\r').splitn(3, '\t').collect();
        let [_, rating, text] = fields[..] else {
            bail!("{} line {}: not id, rating, text", path.display(), line + 1);
        };
        let rating: f64 = rating
            .trim()
            .parse()
            .with_context(|| format!("{} line {}: rating", path.display(), line + 1))?;
        if rating != 0.0 {
            tweets.push(Tweet {
                text: text.to_string(),
                label: i64::from(rating > 0.0),
            });
        }
    }
    Ok(tweets)
}

/// Lower-case words (letters, digits and inner apostrophes); `!` and `?` are words of their own.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<String>| {
        let w = word.trim_matches('\'');
        if !w.is_empty() {
            out.push(w.to_string());
        }
        word.clear();
    };
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() || c == '\'' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            if c == '!' || c == '?' {
                out.push(c.to_string());
            }
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The words seen at least twice in the training tweets, most frequent first, at most
/// `size − 2` of them: ids 0 and 1 are padding and unknown words.
pub struct Vocabulary {
    ids: HashMap<String, usize>,
    size: usize,
}

impl Vocabulary {
    pub fn build(tweets: &[Tweet], size: usize) -> Self {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for t in tweets {
            for w in words(&t.text) {
                *counts.entry(w).or_default() += 1;
            }
        }
        let mut ranked: Vec<(String, usize)> =
            counts.into_iter().filter(|(_, c)| *c >= 2).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(size.saturating_sub(2));
        let ids: HashMap<String, usize> = ranked
            .into_iter()
            .enumerate()
            .map(|(i, (w, _))| (w, i + 2))
            .collect();
        let size = ids.len() + 2;
        Vocabulary { ids, size }
    }

    /// Ids in use, padding and unknown included.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn contains(&self, word: &str) -> bool {
        self.ids.contains_key(word)
    }

    /// `words` as `seq_len` token ids (cut, or padded with [`PAD`]).
    pub fn encode(&self, words: &[String], seq_len: usize) -> Vec<f64> {
        let mut ids: Vec<f64> = words
            .iter()
            .take(seq_len)
            .map(|w| *self.ids.get(w).unwrap_or(&UNKNOWN) as f64)
            .collect();
        ids.resize(seq_len, PAD as f64);
        ids
    }
}

/// Word swaps for the counterfactuals: a sentiment word and a near-synonym of it.
const SYNONYMS: [(&str, &str); 10] = [
    ("good", "great"),
    ("great", "good"),
    ("love", "like"),
    ("happy", "glad"),
    ("best", "good"),
    ("awesome", "great"),
    ("bad", "terrible"),
    ("hate", "dislike"),
    ("sad", "upset"),
    ("worst", "bad"),
];

/// A tweet and its edits: the original, a synonym swap, a negation of the swapped word,
/// and the original with a positive and with a negative word added.
pub fn counterfactuals(words: &[String], vocab: &Vocabulary) -> Option<Vec<(String, Vec<String>)>> {
    let (at, swap) = words.iter().enumerate().find_map(|(i, w)| {
        SYNONYMS
            .iter()
            .find(|(a, b)| a == w && vocab.contains(b))
            .map(|&(_, b)| (i, b))
    })?;
    let with = |edit: &dyn Fn(&mut Vec<String>)| {
        let mut v = words.to_vec();
        edit(&mut v);
        v
    };
    let word = words[at].clone();
    Some(vec![
        ("original".to_string(), words.to_vec()),
        (
            format!("{word} → {swap}"),
            with(&|v| v[at] = swap.to_string()),
        ),
        (
            format!("not {word}"),
            with(&|v| v.insert(at, "not".to_string())),
        ),
        (
            "+ \"love it\"".to_string(),
            with(&|v| v.extend(["love", "it"].map(String::from))),
        ),
        (
            "+ \"hate it\"".to_string(),
            with(&|v| v.extend(["hate", "it"].map(String::from))),
        ),
    ])
}

/// The first of `tweets` that fits in `seq_len − 2` words and has a synonym to swap.
pub fn pick(tweets: &[Tweet], vocab: &Vocabulary, seq_len: usize) -> Option<Vec<String>> {
    tweets
        .iter()
        .map(|t| words(&t.text))
        .filter(|w| w.len() + 2 <= seq_len)
        .find(|w| counterfactuals(w, vocab).is_some())
}
