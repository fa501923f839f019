use crate::ir::Graph;

/// Removes nodes none of whose outputs is read (by a node or as a graph
/// output), and output slots nobody reads.
pub fn dead_nodes(g: &mut Graph) -> usize {
    let mut removed = 0;
    loop {
        let used = g.consumers();
        let before = g.nodes.len();
        g.nodes
            .retain(|n| n.outputs.iter().flatten().any(|&o| used[o] > 0));
        removed += before - g.nodes.len();
        if before == g.nodes.len() {
            break;
        }
    }
    removed
}
