//! RFC 9162 §2.1 tree math: stored-hash addressing, tree heads, inclusion and consistency
//! proofs, and their checks.
//!
//! Structure follows Go's `golang.org/x/mod/sumdb/tlog`: one set of pure functions says
//! *which* stored hashes an answer needs (`*_nodes`), another says *how they combine*; the
//! only storage interface between them is [`HashReader::read_hashes`], called once per answer.
//! A stored hash is the root of a complete subtree of 2^level leaves, named by
//! [`NodeId`] `{level, index}`: its leaves are `[index << level, (index + 1) << level)`.
//! Index arithmetic that goes wrong is a bug, so it panics ("bad math"); proof checks that
//! fail are ordinary errors and refuse proofs with missing or extra hashes.

use crate::hash::{Hash, TreeHash};

/// A complete subtree: `2^level` leaves starting at leaf `index << level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

impl NodeId {
    pub const fn new(level: u8, index: u64) -> NodeId {
        NodeId { level, index }
    }
}

/// Where proofs and tree heads get their stored hashes from: memory, files or a bucket.
/// One call per answer, so a store can batch its reads.
pub trait HashReader {
    type Error;
    /// Returns the hashes of `nodes`, in the same order.
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, Self::Error>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("proof request out of range: {0}")]
    OutOfRange(String),
    #[error("proof has {got} hashes, expected {expected}")]
    WrongLength { got: usize, expected: usize },
    #[error("proof does not lead to the expected root")]
    RootMismatch,
    #[error("consistency proof does not lead to the old root")]
    OldRootMismatch,
}

/// The largest power of two strictly less than `n` (n >= 2), and its log2.
#[inline]
fn split_point(n: u64) -> (u64, u8) {
    assert!(n >= 2, "bad math: split_point({n})");
    let level = 63 - (n - 1).leading_zeros();
    (1u64 << level, level as u8)
}

/// Position of a stored hash in Go tlog's dense linear order, for stores that keep all
/// stored hashes in one flat array. Level L's n'th hash comes right after level L+1's
/// (2n+1)'th, so appending leaf n appends exactly the hashes it completes.
pub fn stored_hash_index(node: NodeId) -> u64 {
    let mut n = node.index;
    for _ in 0..node.level {
        n = 2 * n + 1;
    }
    let mut i = 0u64;
    while n > 0 {
        i += n;
        n >>= 1;
    }
    i + node.level as u64
}

/// Number of stored hashes of a tree of `size` leaves: every complete subtree.
pub fn stored_hash_count(size: u64) -> u64 {
    // Each leaf completes one node per level up to its number of trailing ones + 1;
    // summed over leaves that is 2*size - popcount(size).
    2 * size - size.count_ones() as u64
}

/// Number of complete nodes at `level` in a tree of `size` leaves.
#[inline]
pub fn level_width(size: u64, level: u8) -> u64 {
    if level >= 64 {
        0
    } else {
        size >> level
    }
}

/// The nodes whose hashes compose the subtree of leaves `[lo, hi)`, left to right: the
/// largest complete subtrees it splits into. Appends to `need`.
fn subtree_nodes(mut lo: u64, hi: u64, need: &mut Vec<NodeId>) {
    while lo < hi {
        let (k, level) = split_point(hi - lo + 1);
        assert!(lo & (k - 1) == 0, "bad math in subtree_nodes");
        need.push(NodeId::new(level, lo >> level));
        lo += k;
    }
}

/// Folds the hashes `subtree_nodes(lo, hi)` asked for into the subtree's hash; returns it
/// and the hashes not consumed.
fn subtree_hash(alg: TreeHash, mut lo: u64, hi: u64, hashes: &[Hash]) -> (Hash, &[Hash]) {
    let mut count = 0usize;
    while lo < hi {
        let (k, _) = split_point(hi - lo + 1);
        assert!(lo & (k - 1) == 0, "bad math in subtree_hash");
        count += 1;
        lo += k;
    }
    assert!(
        count >= 1 && hashes.len() >= count,
        "bad index math in subtree_hash"
    );
    let mut h = hashes[count - 1];
    for left in hashes[..count - 1].iter().rev() {
        h = alg.node(left, &h);
    }
    (h, &hashes[count..])
}

/// The stored hashes needed for the tree head of `size`.
pub fn tree_hash_nodes(size: u64) -> Vec<NodeId> {
    let mut need = Vec::with_capacity(64);
    subtree_nodes(0, size, &mut need);
    need
}

/// The root of the tree of `size` leaves.
pub fn tree_hash<R: HashReader>(alg: TreeHash, size: u64, reader: &R) -> Result<Hash, R::Error> {
    if size == 0 {
        return Ok(alg.empty());
    }
    let need = tree_hash_nodes(size);
    let hashes = reader.read_hashes(&need)?;
    assert_eq!(
        hashes.len(),
        need.len(),
        "hash reader returned a wrong count"
    );
    let (h, rest) = subtree_hash(alg, 0, size, &hashes);
    assert!(rest.is_empty(), "bad index math in tree_hash");
    Ok(h)
}

fn leaf_proof_nodes(lo: u64, hi: u64, n: u64, need: &mut Vec<NodeId>) {
    assert!(lo <= n && n < hi, "bad math in leaf_proof_nodes");
    if lo + 1 == hi {
        return;
    }
    let (k, _) = split_point(hi - lo);
    if n < lo + k {
        leaf_proof_nodes(lo, lo + k, n, need);
        subtree_nodes(lo + k, hi, need);
    } else {
        subtree_nodes(lo, lo + k, need);
        leaf_proof_nodes(lo + k, hi, n, need);
    }
}

fn leaf_proof<'h>(
    alg: TreeHash,
    lo: u64,
    hi: u64,
    n: u64,
    hashes: &'h [Hash],
    proof: &mut Vec<Hash>,
) -> &'h [Hash] {
    assert!(lo <= n && n < hi, "bad math in leaf_proof");
    if lo + 1 == hi {
        // The verifier has the leaf hash; it is not part of the proof.
        return hashes;
    }
    let (k, _) = split_point(hi - lo);
    // Walk toward leaf n; the sibling subtree's hash is the proof entry at this depth,
    // appended after the deeper ones so the proof reads bottom-up as RFC 9162 orders it.
    if n < lo + k {
        let rest = leaf_proof(alg, lo, lo + k, n, hashes, proof);
        let (th, rest) = subtree_hash(alg, lo + k, hi, rest);
        proof.push(th);
        rest
    } else {
        let (th, rest) = subtree_hash(alg, lo, lo + k, hashes);
        let rest = leaf_proof(alg, lo + k, hi, n, rest, proof);
        proof.push(th);
        rest
    }
}

/// The stored hashes an inclusion proof of leaf `index` in a tree of `size` reads.
pub fn inclusion_proof_nodes(index: u64, size: u64) -> Result<Vec<NodeId>, ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange(format!(
            "leaf {index} is not in a tree of size {size}"
        )));
    }
    let mut need = Vec::with_capacity(128);
    leaf_proof_nodes(0, size, index, &mut need);
    Ok(need)
}

/// Builds the inclusion proof of leaf `index` in the tree of `size` from the hashes of
/// [`inclusion_proof_nodes`].
pub fn inclusion_proof_from_hashes(
    alg: TreeHash,
    index: u64,
    size: u64,
    hashes: &[Hash],
) -> Vec<Hash> {
    let mut proof = Vec::with_capacity(64);
    let rest = leaf_proof(alg, 0, size, index, hashes, &mut proof);
    assert!(rest.is_empty(), "bad index math in inclusion proof");
    proof
}

/// RFC 9162 §2.1.3.1: the inclusion proof of leaf `index` in the tree of `size`.
pub fn prove_inclusion<R: HashReader>(
    alg: TreeHash,
    index: u64,
    size: u64,
    reader: &R,
) -> Result<Result<Vec<Hash>, ProofError>, R::Error> {
    let need = match inclusion_proof_nodes(index, size) {
        Ok(need) => need,
        Err(e) => return Ok(Err(e)),
    };
    let hashes = reader.read_hashes(&need)?;
    assert_eq!(
        hashes.len(),
        need.len(),
        "hash reader returned a wrong count"
    );
    Ok(Ok(inclusion_proof_from_hashes(alg, index, size, &hashes)))
}

fn run_inclusion(
    alg: TreeHash,
    proof: &[Hash],
    lo: u64,
    hi: u64,
    n: u64,
    leaf: Hash,
) -> Option<Hash> {
    if lo + 1 == hi {
        return proof.is_empty().then_some(leaf);
    }
    let (last, deeper) = proof.split_last()?;
    let (k, _) = split_point(hi - lo);
    if n < lo + k {
        let th = run_inclusion(alg, deeper, lo, lo + k, n, leaf)?;
        Some(alg.node(&th, last))
    } else {
        let th = run_inclusion(alg, deeper, lo + k, hi, n, leaf)?;
        Some(alg.node(last, &th))
    }
}

/// The root an inclusion proof leads to, or why it cannot lead anywhere.
pub fn root_from_inclusion_proof(
    alg: TreeHash,
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange(format!(
            "leaf {index} is not in a tree of size {size}"
        )));
    }
    let expected = inclusion_proof_len(index, size);
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            expected,
        });
    }
    run_inclusion(alg, proof, 0, size, index, *leaf).ok_or(ProofError::RootMismatch)
}

/// RFC 9162 §2.1.3.2: checks that `leaf` is at `index` in the tree of `size` and `root`.
pub fn verify_inclusion(
    alg: TreeHash,
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_inclusion_proof(alg, index, size, leaf, proof)? == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Length of the inclusion proof of `index` in a tree of `size` (index < size).
pub fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let (mut lo, mut hi, mut len) = (0u64, size, 0usize);
    while hi - lo > 1 {
        let (k, _) = split_point(hi - lo);
        if index < lo + k {
            hi = lo + k;
        } else {
            lo += k;
        }
        len += 1;
    }
    len
}

fn consistency_nodes(lo: u64, hi: u64, n: u64, need: &mut Vec<NodeId>) {
    assert!(lo < n && n <= hi, "bad math in consistency_nodes");
    if n == hi {
        if lo != 0 {
            subtree_nodes(lo, hi, need);
        }
        return;
    }
    let (k, _) = split_point(hi - lo);
    if n <= lo + k {
        consistency_nodes(lo, lo + k, n, need);
        subtree_nodes(lo + k, hi, need);
    } else {
        subtree_nodes(lo, lo + k, need);
        consistency_nodes(lo + k, hi, n, need);
    }
}

fn consistency<'h>(
    alg: TreeHash,
    lo: u64,
    hi: u64,
    n: u64,
    hashes: &'h [Hash],
    proof: &mut Vec<Hash>,
) -> &'h [Hash] {
    assert!(lo < n && n <= hi, "bad math in consistency");
    if n == hi {
        // A subtree that is the whole old tree is known to the verifier; any other common
        // subtree is sent.
        if lo == 0 {
            return hashes;
        }
        let (th, rest) = subtree_hash(alg, lo, hi, hashes);
        proof.push(th);
        return rest;
    }
    let (k, _) = split_point(hi - lo);
    if n <= lo + k {
        let rest = consistency(alg, lo, lo + k, n, hashes, proof);
        let (th, rest) = subtree_hash(alg, lo + k, hi, rest);
        proof.push(th);
        rest
    } else {
        let (th, rest) = subtree_hash(alg, lo, lo + k, hashes);
        let rest = consistency(alg, lo + k, hi, n, rest, proof);
        proof.push(th);
        rest
    }
}

/// The stored hashes a consistency proof from `old_size` to `new_size` reads.
pub fn consistency_proof_nodes(old_size: u64, new_size: u64) -> Result<Vec<NodeId>, ProofError> {
    if old_size > new_size {
        return Err(ProofError::OutOfRange(format!(
            "old size {old_size} is larger than new size {new_size}"
        )));
    }
    let mut need = Vec::with_capacity(128);
    if old_size > 0 && old_size < new_size {
        consistency_nodes(0, new_size, old_size, &mut need);
    }
    Ok(need)
}

pub fn consistency_proof_from_hashes(
    alg: TreeHash,
    old_size: u64,
    new_size: u64,
    hashes: &[Hash],
) -> Vec<Hash> {
    let mut proof = Vec::with_capacity(64);
    if old_size > 0 && old_size < new_size {
        let rest = consistency(alg, 0, new_size, old_size, hashes, &mut proof);
        assert!(rest.is_empty(), "bad index math in consistency proof");
    }
    proof
}

/// RFC 9162 §2.1.4.1: the consistency proof between the trees of `old_size` and `new_size`.
/// Empty when either is 0 or they are equal: there is nothing to prove.
pub fn prove_consistency<R: HashReader>(
    alg: TreeHash,
    old_size: u64,
    new_size: u64,
    reader: &R,
) -> Result<Result<Vec<Hash>, ProofError>, R::Error> {
    let need = match consistency_proof_nodes(old_size, new_size) {
        Ok(need) => need,
        Err(e) => return Ok(Err(e)),
    };
    let hashes = if need.is_empty() {
        Vec::new()
    } else {
        reader.read_hashes(&need)?
    };
    assert_eq!(
        hashes.len(),
        need.len(),
        "hash reader returned a wrong count"
    );
    Ok(Ok(consistency_proof_from_hashes(
        alg, old_size, new_size, &hashes,
    )))
}

/// Returns (old root, new root) the proof leads to.
fn run_consistency(
    alg: TreeHash,
    proof: &[Hash],
    lo: u64,
    hi: u64,
    n: u64,
    old: Hash,
) -> Option<(Hash, Hash)> {
    if n == hi {
        if lo == 0 {
            return proof.is_empty().then_some((old, old));
        }
        return (proof.len() == 1).then(|| (proof[0], proof[0]));
    }
    let (last, deeper) = proof.split_last()?;
    let (k, _) = split_point(hi - lo);
    if n <= lo + k {
        let (oh, th) = run_consistency(alg, deeper, lo, lo + k, n, old)?;
        Some((oh, alg.node(&th, last)))
    } else {
        let (oh, th) = run_consistency(alg, deeper, lo + k, hi, n, old)?;
        Some((alg.node(last, &oh), alg.node(last, &th)))
    }
}

/// RFC 9162 §2.1.4.2: checks that the tree of `old_size` and `old_root` is a prefix of the
/// tree of `new_size` and `new_root`.
pub fn verify_consistency(
    alg: TreeHash,
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::OutOfRange(format!(
            "old size {old_size} is larger than new size {new_size}"
        )));
    }
    if old_size == 0 || old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                expected: 0,
            });
        }
        if old_size == new_size && old_root != new_root {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    let expected = consistency_proof_len(old_size, new_size);
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            expected,
        });
    }
    let (old, new) = run_consistency(alg, proof, 0, new_size, old_size, *old_root)
        .ok_or(ProofError::RootMismatch)?;
    if old != *old_root {
        return Err(ProofError::OldRootMismatch);
    }
    if new != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Length of the consistency proof from `old_size` to `new_size`: one hash per step down
/// the new tree, plus the common subtree unless it is the whole old tree.
pub fn consistency_proof_len(old_size: u64, new_size: u64) -> usize {
    if old_size == 0 || old_size >= new_size {
        return 0;
    }
    let (mut lo, mut hi, mut len) = (0u64, new_size, 0usize);
    while old_size != hi {
        let (k, _) = split_point(hi - lo);
        if old_size <= lo + k {
            hi = lo + k;
        } else {
            lo += k;
        }
        len += 1;
    }
    len + usize::from(lo != 0)
}

/// Folds consecutive nodes of one level up `k` levels in place: `nodes` holds `m · 2^k`
/// nodes starting at a multiple of `2^k`, and afterwards `nodes[..m]` are their ancestors
/// `k` levels up (each the hash of its two children, `2^k − 1` hashes apiece). Returns `m`.
pub fn fold_levels(alg: TreeHash, nodes: &mut [Hash], k: u32) -> usize {
    assert!(
        nodes.len().is_multiple_of(1 << k),
        "whole subtrees of 2^k nodes"
    );
    let mut n = nodes.len();
    for _ in 0..k {
        n /= 2;
        for i in 0..n {
            nodes[i] = alg.node(&nodes[2 * i], &nodes[2 * i + 1]);
        }
    }
    n
}

/// The right edge of the tree: the newest complete node at each level. It is all the
/// state appending needs (a new leaf only ever combines with these), and the tree head is
/// the fold of the edge nodes at the set bits of the size.
#[derive(Clone, Debug)]
pub struct RightEdge {
    alg: TreeHash,
    size: u64,
    edge: [Hash; 64],
}

impl RightEdge {
    pub fn new(alg: TreeHash) -> RightEdge {
        RightEdge {
            alg,
            size: 0,
            edge: [[0u8; 32]; 64],
        }
    }

    /// Rebuilds the edge of a tree of `size` from a store: the last node of each level.
    pub fn load<R: HashReader>(
        alg: TreeHash,
        size: u64,
        reader: &R,
    ) -> Result<RightEdge, R::Error> {
        let mut edge = RightEdge::new(alg);
        edge.size = size;
        let need: Vec<NodeId> = (0u8..64)
            .filter(|&l| level_width(size, l) > 0)
            .map(|l| NodeId::new(l, level_width(size, l) - 1))
            .collect();
        let hashes = reader.read_hashes(&need)?;
        assert_eq!(
            hashes.len(),
            need.len(),
            "hash reader returned a wrong count"
        );
        for (node, h) in need.iter().zip(hashes) {
            edge.edge[node.level as usize] = h;
        }
        Ok(edge)
    }

    /// The edge of a tree of `size` from its complete-subtree roots, largest first (the
    /// order of [`RightEdge::subtree_roots`]).
    pub fn from_parts(alg: TreeHash, size: u64, roots: &[Hash]) -> RightEdge {
        assert_eq!(
            roots.len(),
            size.count_ones() as usize,
            "bad math: edge of {size}"
        );
        let mut edge = RightEdge::new(alg);
        edge.size = size;
        let levels = (0..64u8).rev().filter(|l| size & (1u64 << l) != 0);
        for (level, h) in levels.zip(roots) {
            edge.edge[level as usize] = *h;
        }
        edge
    }

    /// The roots of the complete subtrees the tree splits into, largest (leftmost) first.
    /// Together they determine every later tree head.
    pub fn subtree_roots(&self) -> Vec<Hash> {
        (0..64u8)
            .rev()
            .filter(|l| self.size & (1u64 << l) != 0)
            .map(|l| self.edge[l as usize])
            .collect()
    }

    pub fn alg(&self) -> TreeHash {
        self.alg
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash; calls `emit` for every node it completes, leaf first, in
    /// stored-hash order.
    #[inline]
    pub fn append(&mut self, leaf: Hash, mut emit: impl FnMut(NodeId, &Hash)) {
        let mut h = leaf;
        let mut index = self.size;
        let mut level = 0usize;
        loop {
            emit(NodeId::new(level as u8, index), &h);
            let sibling = self.edge[level];
            self.edge[level] = h;
            if index & 1 == 0 {
                break;
            }
            h = self.alg.node(&sibling, &h);
            index >>= 1;
            level += 1;
        }
        self.size += 1;
    }

    /// The tree head at the current size.
    pub fn root(&self) -> Hash {
        if self.size == 0 {
            return self.alg.empty();
        }
        let mut acc: Option<Hash> = None;
        for level in 0..64 {
            if self.size & (1u64 << level) != 0 {
                let node = self.edge[level];
                acc = Some(match acc {
                    None => node,
                    Some(right) => self.alg.node(&node, &right),
                });
            }
        }
        acc.unwrap_or_else(|| self.alg.empty())
    }

    /// The newest complete node at `level`, if the tree has one.
    pub fn last_node(&self, level: u8) -> Option<Hash> {
        (level_width(self.size, level) > 0).then(|| self.edge[level as usize])
    }
}

/// An in-memory store of every stored hash, by level. The reference store for tests and
/// the verifier's scratch tree; the engine's store keeps the same layout in files.
#[derive(Clone, Debug, Default)]
pub struct MemoryHashes {
    pub levels: Vec<Vec<Hash>>,
}

impl MemoryHashes {
    pub fn put(&mut self, node: NodeId, hash: &Hash) {
        let level = node.level as usize;
        if self.levels.len() <= level {
            self.levels.resize_with(level + 1, Vec::new);
        }
        assert_eq!(
            self.levels[level].len() as u64,
            node.index,
            "hashes stored out of order"
        );
        self.levels[level].push(*hash);
    }

    pub fn get(&self, node: NodeId) -> Option<&Hash> {
        self.levels
            .get(node.level as usize)?
            .get(node.index as usize)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored hash {0:?} is missing")]
pub struct MissingHash(pub NodeId);

impl HashReader for MemoryHashes {
    type Error = MissingHash;
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, MissingHash> {
        nodes
            .iter()
            .map(|&n| self.get(n).copied().ok_or(MissingHash(n)))
            .collect()
    }
}

/// The stored hashes a range proof of leaves `[a, b)` in the tree of `size` reads: the
/// hashes of the subtrees of the RFC 9162 split that lie wholly outside the range, left to
/// right. With the range's own leaves they give the root: one proof for a whole range
/// (`root_from_range_proof`), at most about twice the tree's height.
fn range_proof_nodes_in(lo: u64, hi: u64, a: u64, b: u64, need: &mut Vec<NodeId>) {
    if b <= lo || hi <= a {
        subtree_nodes(lo, hi, need);
        return;
    }
    if a <= lo && hi <= b {
        return;
    }
    let (k, _) = split_point(hi - lo);
    range_proof_nodes_in(lo, lo + k, a, b, need);
    range_proof_nodes_in(lo + k, hi, a, b, need);
}

fn range_proof_in<'h>(
    alg: TreeHash,
    (lo, hi): (u64, u64),
    (a, b): (u64, u64),
    hashes: &'h [Hash],
    proof: &mut Vec<Hash>,
) -> &'h [Hash] {
    if b <= lo || hi <= a {
        let (h, rest) = subtree_hash(alg, lo, hi, hashes);
        proof.push(h);
        return rest;
    }
    if a <= lo && hi <= b {
        return hashes;
    }
    let (k, _) = split_point(hi - lo);
    let rest = range_proof_in(alg, (lo, lo + k), (a, b), hashes, proof);
    range_proof_in(alg, (lo + k, hi), (a, b), rest, proof)
}

fn check_range(a: u64, b: u64, size: u64) -> Result<(), ProofError> {
    if a >= b || b > size {
        return Err(ProofError::OutOfRange(format!(
            "range [{a}, {b}) is empty or not in a tree of size {size}"
        )));
    }
    Ok(())
}

/// The stored hashes a range proof of `[a, b)` in the tree of `size` reads.
pub fn range_proof_nodes(a: u64, b: u64, size: u64) -> Result<Vec<NodeId>, ProofError> {
    check_range(a, b, size)?;
    let mut need = Vec::with_capacity(128);
    range_proof_nodes_in(0, size, a, b, &mut need);
    Ok(need)
}

/// The range proof of leaves `[a, b)` in the tree of `size`, from `reader`'s stored hashes.
pub fn prove_range<R: HashReader>(
    alg: TreeHash,
    a: u64,
    b: u64,
    size: u64,
    reader: &R,
) -> Result<Result<Vec<Hash>, ProofError>, R::Error> {
    let need = match range_proof_nodes(a, b, size) {
        Ok(need) => need,
        Err(e) => return Ok(Err(e)),
    };
    let hashes = reader.read_hashes(&need)?;
    assert_eq!(
        hashes.len(),
        need.len(),
        "hash reader returned a wrong count"
    );
    let mut proof = Vec::with_capacity(need.len());
    let rest = range_proof_in(alg, (0, size), (a, b), &hashes, &mut proof);
    assert!(rest.is_empty(), "bad index math in range proof");
    Ok(Ok(proof))
}

/// The root of the leaves `leaves` (RFC 9162 MTH).
fn mth(alg: TreeHash, leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => alg.empty(),
        1 => leaves[0],
        n => {
            let (k, _) = split_point(n as u64);
            let k = k as usize;
            alg.node(&mth(alg, &leaves[..k]), &mth(alg, &leaves[k..]))
        }
    }
}

fn run_range(
    alg: TreeHash,
    (lo, hi): (u64, u64),
    (a, b): (u64, u64),
    leaves: &[Hash],
    proof: &mut std::slice::Iter<'_, Hash>,
) -> Option<Hash> {
    if b <= lo || hi <= a {
        return proof.next().copied();
    }
    if a <= lo && hi <= b {
        return Some(mth(alg, &leaves[(lo - a) as usize..(hi - a) as usize]));
    }
    let (k, _) = split_point(hi - lo);
    let left = run_range(alg, (lo, lo + k), (a, b), leaves, proof)?;
    let right = run_range(alg, (lo + k, hi), (a, b), leaves, proof)?;
    Some(alg.node(&left, &right))
}

/// The root that the leaf hashes of `[a, b)` and their range proof give for the tree of
/// `size`: one proof for every leaf of the range.
pub fn root_from_range_proof(
    alg: TreeHash,
    a: u64,
    b: u64,
    size: u64,
    leaves: &[Hash],
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    check_range(a, b, size)?;
    if leaves.len() as u64 != b - a {
        return Err(ProofError::OutOfRange(format!(
            "{} leaf hashes for the range [{a}, {b})",
            leaves.len()
        )));
    }
    let mut it = proof.iter();
    let root = run_range(alg, (0, size), (a, b), leaves, &mut it);
    let want = range_proof_nodes(a, b, size)?.len();
    match root {
        Some(r) if it.next().is_none() => Ok(r),
        _ => Err(ProofError::WrongLength {
            got: proof.len(),
            expected: want,
        }),
    }
}

/// Checks that leaves `[a, b)` are exactly `leaves` in the tree of `size` with `root`.
pub fn verify_range(
    alg: TreeHash,
    a: u64,
    b: u64,
    size: u64,
    leaves: &[Hash],
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_range_proof(alg, a, b, size, leaves, proof)? == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// A whole tree in memory: leaves appended, every stored hash kept.
#[derive(Clone, Debug)]
pub struct MemoryTree {
    pub edge: RightEdge,
    pub hashes: MemoryHashes,
}

impl MemoryTree {
    pub fn new(alg: TreeHash) -> MemoryTree {
        MemoryTree {
            edge: RightEdge::new(alg),
            hashes: MemoryHashes::default(),
        }
    }

    pub fn append_leaf_hash(&mut self, leaf: Hash) {
        let hashes = &mut self.hashes;
        self.edge.append(leaf, |node, h| hashes.put(node, h));
    }

    pub fn size(&self) -> u64 {
        self.edge.size()
    }

    pub fn root(&self) -> Hash {
        self.edge.root()
    }

    pub fn root_at(&self, size: u64) -> Hash {
        match tree_hash(self.edge.alg(), size, &self.hashes) {
            Ok(h) => h,
            Err(e) => panic!("bad math: {e} for size {size} <= {}", self.size()),
        }
    }
}
