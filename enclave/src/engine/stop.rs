//! Stop sequences on streamed text: text is released as soon as it can no longer be the
//! start of a stop sequence, and generation ends at the first stop sequence, which is not
//! part of the output.

/// What a piece of generated text yields. Its `Debug` shows lengths, not text.
#[derive(PartialEq, Eq)]
pub enum Step {
    /// Text to emit now (may be empty), and generation continues.
    Emit(String),
    /// A stop sequence was found: the text before it, and generation ends.
    Stop(String),
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Emit(t) => write!(f, "Emit({} bytes)", t.len()),
            Self::Stop(t) => write!(f, "Stop({} bytes)", t.len()),
        }
    }
}

/// Watches generated text for stop sequences. Its `Debug` shows no text.
#[derive(Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl std::fmt::Debug for StopMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StopMatcher({} stops, {} bytes held)",
            self.stops.len(),
            self.held.len()
        )
    }
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Adds generated `text`.
    pub fn push(&mut self, text: &str) -> Step {
        self.held.push_str(text);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let out = self.held[..at].to_owned();
            self.held.clear();
            return Step::Stop(out);
        }
        // Hold back the longest suffix that is a proper prefix of some stop sequence.
        let keep = self
            .stops
            .iter()
            .map(|s| longest_suffix_prefix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_owned();
        self.held.drain(..cut);
        Step::Emit(out)
    }

    /// The text still held at the end of generation.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`, on char
/// boundaries.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let max = text.len().min(stop.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n)
                && stop.is_char_boundary(n)
                && text.ends_with(&stop[..n])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_held_only_while_it_may_start_a_stop_sequence() {
        let mut m = StopMatcher::new(&["\n\nUser:".into(), "END".into()]);
        assert_eq!(m.push("Hello"), Step::Emit("Hello".into()));
        assert_eq!(m.push(" wor"), Step::Emit(" wor".into()));
        assert_eq!(m.push("ld\n"), Step::Emit("ld".into()));
        assert_eq!(m.push("\nUs"), Step::Emit(String::new()));
        assert_eq!(m.push("e"), Step::Emit(String::new()));
        assert_eq!(m.push("EN"), Step::Emit("\n\nUse".into()));
        assert_eq!(m.push("D and more"), Step::Stop(String::new()));
        let mut m = StopMatcher::new(&["stop".into()]);
        assert_eq!(m.push("a sto"), Step::Emit("a ".into()));
        assert_eq!(m.finish(), "sto");
        let mut m = StopMatcher::new(&["é!".into()]);
        assert_eq!(m.push("café"), Step::Emit("caf".into()));
        assert_eq!(m.push("!x"), Step::Stop(String::new()));
        let mut none = StopMatcher::new(&[String::new()]);
        assert_eq!(none.push("abc"), Step::Emit("abc".into()));
    }
}
