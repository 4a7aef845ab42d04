//! Which piece to ask which provider for next: sans-IO and deterministic
//! (the caller passes the randomness), so every rule is unit-tested.
//!
//! Rules, in order:
//! - A provider is only asked for pieces its latest bitfield shows.
//! - Pieces nobody else is fetching come first, rarest first (fewest
//!   providers hold them), random among equals, so simultaneous fetchers
//!   rarely pull the same piece from the same source.
//! - A complete provider (a seed, such as the publisher) is asked only for
//!   pieces no partial provider holds: once a piece has spread, the crowd
//!   serves it, and the seed's upload stays near one copy of the blob.
//! - Of the pieces only a seed holds, each fetcher first takes those
//!   designated to it: rendezvous hashing of (piece, fetcher) over the
//!   providers that are fetching too (their bitfield names the size but is
//!   not complete). Fetchers that start together thus split the seed's
//!   pieces instead of all pulling the same ones; an impatient caller (idle
//!   for a while) may take any.
//! - Endgame: when every missing piece is already in flight and at most
//!   [`ENDGAME_PIECES`] are missing, an idle provider may duplicate the
//!   piece that has waited longest, so one slow provider cannot hold back
//!   the end; but only a late one (in flight for twice as long as pieces
//!   typically take here). With many providers every fetch is "all in
//!   flight" almost from its start, and eager duplicates would double a
//!   crowd's traffic.

use std::collections::HashMap;
use std::hash::Hash;

/// The endgame starts when at most this many pieces are missing.
pub const ENDGAME_PIECES: usize = 4;

/// A piece's state on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Missing,
    /// Requested; the number of requests out and when the first went out
    /// (caller's clock, any monotonic unit).
    InFlight {
        requests: u8,
        since: u64,
    },
    Done,
}

/// The per-blob plan of one fetch.
#[derive(Debug)]
pub struct Plan<P> {
    pieces: Vec<Piece>,
    /// Each provider's latest bitfield, whether it is complete, and
    /// whether it is fetching the blob too.
    have: HashMap<P, (Vec<bool>, bool, bool)>,
    /// Per piece: how many providers hold it, and how many of those are
    /// partial. Kept with `have`, so a pick costs one pass over the pieces
    /// however many providers there are.
    holders: Vec<(u32, u32)>,
    /// Per piece: designated to this node among the fetchers; recomputed
    /// only when the set of fetching providers changes.
    designated: Option<Vec<bool>>,
    remaining: usize,
    /// A moving average of how long a piece takes, in the caller's unit.
    typical: Option<u64>,
    /// This node, for the rendezvous of seed pieces.
    me: P,
}

impl<P: Eq + Hash + Clone> Plan<P> {
    /// `done[i]`: piece `i` is already held (a resumed fetch).
    pub fn new(done: &[bool], me: P) -> Self {
        let pieces: Vec<Piece> = done
            .iter()
            .map(|&d| if d { Piece::Done } else { Piece::Missing })
            .collect();
        let remaining = pieces.iter().filter(|p| **p != Piece::Done).count();
        Plan {
            holders: vec![(0, 0); pieces.len()],
            pieces,
            have: HashMap::new(),
            designated: None,
            remaining,
            typical: None,
            me,
        }
    }

    pub fn pieces(&self) -> usize {
        self.pieces.len()
    }

    /// Pieces not yet held.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// Replaces what `provider` holds (from its latest bitfield). A vector of
    /// the wrong length is a provider that disagrees on the size: ignored.
    /// `fetching`: the provider is fetching the blob itself (a partial).
    pub fn set_have(&mut self, provider: P, have: Vec<bool>, fetching: bool) {
        if have.len() != self.pieces.len() {
            return;
        }
        let seed = have.iter().all(|x| *x);
        let fetching = fetching && !seed;
        let old = self.remove(&provider);
        if old != Some(fetching) && (fetching || old == Some(true)) {
            self.designated = None;
        }
        self.count(&have, seed, 1);
        self.have.insert(provider, (have, seed, fetching));
    }

    /// Forgets a provider (it failed, lied or went away).
    pub fn drop_provider(&mut self, provider: &P) {
        if self.remove(provider) == Some(true) {
            self.designated = None;
        }
    }

    /// Takes a provider's bitfield out of the counts; whether it was fetching.
    fn remove(&mut self, provider: &P) -> Option<bool> {
        let (have, seed, fetching) = self.have.remove(provider)?;
        self.count(&have, seed, -1);
        Some(fetching)
    }

    fn count(&mut self, have: &[bool], seed: bool, sign: i32) {
        for (h, held) in self.holders.iter_mut().zip(have) {
            if *held {
                h.0 = h.0.saturating_add_signed(sign);
                if !seed {
                    h.1 = h.1.saturating_add_signed(sign);
                }
            }
        }
    }

    /// Per piece, whether it is designated to this node: rendezvous hashing
    /// of (piece, fetcher) over this node and the fetching providers.
    fn designated(&mut self) -> &[bool] {
        if self.designated.is_none() {
            let fetchers: Vec<u64> = self
                .have
                .iter()
                .filter(|(p, (_, _, fetching))| *fetching && **p != self.me)
                .map(|(p, _)| key_of(p))
                .collect();
            let me = key_of(&self.me);
            let designated = (0..self.pieces.len() as u64)
                .map(|i| {
                    let mine = mix(me, i);
                    !fetchers.iter().any(|f| mix(*f, i) > mine)
                })
                .collect();
            self.designated = Some(designated);
        }
        self.designated.as_deref().unwrap_or_default()
    }

    /// Whether `provider` has sent a bitfield (and was not dropped).
    pub fn knows(&self, provider: &P) -> bool {
        self.have.contains_key(provider)
    }

    /// Whether any provider holds a piece this node still needs.
    pub fn any_source(&self) -> bool {
        self.holders
            .iter()
            .zip(&self.pieces)
            .any(|((all, _), p)| *all > 0 && *p != Piece::Done)
    }

    /// The next piece to request from `provider`, marked in flight; `None`
    /// if it has nothing useful now. `random` breaks ties; `now` stamps
    /// the request for the endgame; `patient`: from a seed, take only the
    /// pieces designated to this node.
    pub fn next_for(&mut self, provider: &P, random: u64, now: u64, patient: bool) -> Option<usize> {
        let seed = self.have.get(provider)?.1;
        if seed && patient {
            self.designated();
        }
        let (have, _, _) = self.have.get(provider)?;
        let designated = self.designated.as_deref().unwrap_or_default();
        let mut best: Option<(u32, usize)> = None; // (rarity, index)
        let mut ties = 0u64;
        for (i, piece) in self.pieces.iter().enumerate() {
            if *piece != Piece::Missing || !have[i] {
                continue;
            }
            let (rarity, partial) = self.holders[i];
            // (A seed is never a partial holder itself.)
            if seed && (partial > 0 || (patient && !designated[i])) {
                continue;
            }
            match best {
                Some((r, _)) if rarity > r => continue,
                Some((r, _)) if rarity == r => {
                    // Reservoir sampling among equals, from one random word.
                    ties += 1;
                    if mix(random, i as u64).is_multiple_of(ties) {
                        best = Some((rarity, i));
                    }
                }
                _ => {
                    ties = 1;
                    best = Some((rarity, i));
                }
            }
        }
        if let Some((_, i)) = best {
            self.pieces[i] = Piece::InFlight {
                requests: 1,
                since: now,
            };
            return Some(i);
        }
        // Endgame: only when nothing is missing that is not in flight. A
        // seed duplicates only what no partial holds, or in a crowd every
        // fetcher's endgame would land on the origin.
        if self.remaining > ENDGAME_PIECES || self.pieces.contains(&Piece::Missing) {
            return None;
        }
        let holders = &self.holders;
        let late = |since: u64| self.typical.is_none_or(|t| now.saturating_sub(since) >= 2 * t);
        let (i, requests, since) = self
            .pieces
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Piece::InFlight { requests, since }
                    if have[i] && *requests < 2 && late(*since) && !(seed && holders[i].1 > 0) =>
                {
                    Some((i, *requests, *since))
                }
                _ => None,
            })
            .min_by_key(|(_, _, since)| *since)?;
        self.pieces[i] = Piece::InFlight {
            requests: requests + 1,
            since,
        };
        Some(i)
    }

    /// A request for `piece` completed at `now`: it is held and verified.
    pub fn finished(&mut self, piece: usize, now: u64) {
        if let Piece::InFlight { since, .. } = self.pieces[piece] {
            let took = now.saturating_sub(since);
            self.typical = Some(self.typical.map_or(took, |t| (t * 7 + took) / 8));
        }
        if self.pieces[piece] != Piece::Done {
            self.pieces[piece] = Piece::Done;
            self.remaining -= 1;
        }
    }

    /// A request for `piece` failed or was abandoned: another may take it.
    pub fn failed(&mut self, piece: usize) {
        self.pieces[piece] = match self.pieces[piece] {
            Piece::InFlight { requests, since } if requests > 1 => Piece::InFlight {
                requests: requests - 1,
                since,
            },
            Piece::Done => Piece::Done,
            _ => Piece::Missing,
        };
    }
}

/// A provider's identity as a number, the same on every node running
/// this build (only the split of seed pieces depends on it).
fn key_of<P: Hash>(p: &P) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    p.hash(&mut h);
    h.finish()
}

/// A cheap deterministic mix of the caller's random word and an index.
fn mix(random: u64, i: u64) -> u64 {
    let mut x = random ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(s: &str) -> Vec<bool> {
        s.chars().map(|c| c == '1').collect()
    }

    #[test]
    fn asks_only_for_pieces_the_provider_has_and_never_twice() {
        let mut plan = Plan::new(&bits("0000"), "me");
        plan.set_have("a", bits("0101"), false);
        let first = plan.next_for(&"a", 7, 0, true).unwrap();
        let second = plan.next_for(&"a", 7, 0, true).unwrap();
        let mut got = [first, second];
        got.sort();
        assert_eq!(got, [1, 3]);
        // Nothing else is held by "a", and pieces 0 and 2 are still missing:
        // no endgame duplicate yet.
        assert_eq!(plan.next_for(&"a", 7, 0, true), None);
        assert_eq!(plan.next_for(&"unknown", 7, 0, true), None);
    }

    #[test]
    fn rarest_first() {
        let mut plan = Plan::new(&bits("000"), "me");
        plan.set_have("a", bits("110"), false);
        plan.set_have("b", bits("011"), false);
        plan.set_have("c", bits("010"), false);
        // Piece 1 is held by three, 0 and 2 by one each: "a" takes 0.
        assert_eq!(plan.next_for(&"a", 1, 0, true), Some(0));
        assert_eq!(plan.next_for(&"b", 1, 0, true), Some(2));
    }

    #[test]
    fn a_seed_serves_only_what_no_partial_peer_holds() {
        let mut plan = Plan::new(&bits("0000"), "me");
        plan.set_have("seed", bits("1111"), false);
        plan.set_have("peer", bits("1100"), false);
        let mut from_seed = Vec::new();
        while let Some(i) = plan.next_for(&"seed", 3, 0, true) {
            from_seed.push(i);
        }
        from_seed.sort();
        assert_eq!(from_seed, [2, 3]);
        assert_eq!(plan.next_for(&"peer", 3, 0, true).map(|i| i < 2), Some(true));
    }

    #[test]
    fn a_lone_seed_serves_everything() {
        let mut plan = Plan::new(&bits("00000"), "me");
        plan.set_have("seed", bits("11111"), false);
        let mut n = 0;
        while let Some(i) = plan.next_for(&"seed", n, 0, true) {
            plan.finished(i, 0);
            n += 1;
        }
        assert_eq!(n, 5);
        assert_eq!(plan.remaining(), 0);
    }

    #[test]
    fn failed_pieces_go_back_and_endgame_duplicates_the_oldest() {
        let mut plan = Plan::new(&bits("100"), "me");
        plan.set_have("a", bits("111"), false);
        plan.set_have("b", bits("111"), false);
        let x = plan.next_for(&"a", 5, 10, true).unwrap();
        let y = plan.next_for(&"a", 5, 20, true).unwrap();
        assert_ne!(x, y);
        // All missing pieces are in flight: "b" duplicates the older one.
        assert_eq!(plan.next_for(&"b", 5, 30, true), Some(x));
        // At most two requests per piece.
        assert_eq!(plan.next_for(&"b", 5, 30, true), Some(y));
        assert_eq!(plan.next_for(&"b", 5, 30, true), None);
        plan.failed(x);
        plan.failed(x);
        assert_eq!(plan.next_for(&"b", 5, 40, true), Some(x));
        plan.finished(x, 50);
        plan.finished(y, 50);
        assert_eq!(plan.remaining(), 0);
    }

    #[test]
    fn the_endgame_duplicates_only_late_pieces() {
        let mut plan = Plan::new(&bits("000"), "me");
        plan.set_have("a", bits("111"), false);
        plan.set_have("b", bits("111"), false);
        let first = plan.next_for(&"a", 5, 0, true).unwrap();
        plan.finished(first, 100); // pieces take about 100 here
        plan.next_for(&"a", 5, 100, true).unwrap();
        plan.next_for(&"a", 5, 100, true).unwrap();
        // Everything is in flight, but for 50 only: not late yet.
        assert_eq!(plan.next_for(&"b", 5, 150, true), None);
        assert!(plan.next_for(&"b", 5, 300, true).is_some());
    }

    #[test]
    fn in_the_endgame_a_seed_duplicates_only_what_no_partial_holds() {
        let mut plan = Plan::new(&bits("00"), "me");
        plan.set_have("seed", bits("11"), false);
        plan.set_have("peer", bits("10"), false);
        assert_eq!(plan.next_for(&"peer", 1, 0, true), Some(0));
        assert_eq!(plan.next_for(&"seed", 1, 5, true), Some(1));
        // Both in flight: the seed may duplicate piece 1 (only it holds
        // that), never piece 0, which a partial peer serves.
        assert_eq!(plan.next_for(&"seed", 1, 9, true), Some(1));
        assert_eq!(plan.next_for(&"seed", 1, 9, true), None);
    }

    #[test]
    fn holder_counts_follow_replaced_and_dropped_bitfields() {
        let mut plan = Plan::new(&bits("000"), "me");
        plan.set_have("a", bits("111"), false); // a seed
        plan.set_have("b", bits("100"), false);
        // Piece 0 has a partial holder: the seed is not asked for it.
        assert_eq!(plan.next_for(&"a", 1, 0, false).map(|i| i > 0), Some(true));
        plan.failed(1);
        plan.failed(2);
        // "b" now holds nothing, then goes away: the seed serves all three.
        plan.set_have("b", bits("000"), false);
        plan.drop_provider(&"b");
        let mut got: Vec<usize> = std::iter::from_fn(|| plan.next_for(&"a", 1, 0, false))
            .take(3)
            .collect();
        got.sort();
        assert_eq!(got, [0, 1, 2]);
        assert!(plan.any_source());
    }

    #[test]
    fn fetchers_split_the_seed_only_pieces_and_an_impatient_one_takes_any() {
        let n = 64;
        let seed = vec![true; n];
        let nothing = vec![false; n];
        let fetchers = ["me", "b", "c", "d"];
        let mut taken = vec![0; n];
        for me in fetchers {
            let mut plan = Plan::new(&nothing, me);
            plan.set_have("seed", seed.clone(), false);
            for other in fetchers.iter().filter(|f| **f != me) {
                plan.set_have(*other, nothing.clone(), true);
            }
            while let Some(i) = plan.next_for(&"seed", 9, 0, true) {
                taken[i] += 1;
            }
            // Impatient: the rest of the seed's pieces are open to it.
            assert!(plan.next_for(&"seed", 9, 0, false).is_some() || plan.remaining() == 0);
        }
        // Every piece taken from the seed exactly once across the four.
        assert!(taken.iter().all(|t| *t == 1), "{taken:?}");
    }

    #[test]
    fn a_bitfield_of_the_wrong_size_is_ignored_and_dropped_providers_get_nothing() {
        let mut plan = Plan::new(&bits("00"), "me");
        plan.set_have("liar", bits("111"), false);
        assert_eq!(plan.next_for(&"liar", 1, 0, true), None);
        plan.set_have("a", bits("11"), false);
        plan.drop_provider(&"a");
        assert_eq!(plan.next_for(&"a", 1, 0, true), None);
    }
}
