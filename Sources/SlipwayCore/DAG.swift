/// Dependency-graph helpers over job ids.
public enum DAG {
    /// One cycle, in order, if the graph has any. `edges[a]` lists what `a` needs.
    public static func findCycle(nodes: [String], edges: [String: [String]]) -> [String]? {
        var state: [String: Int] = [:]  // 1 visiting, 2 done
        var stack: [String] = []
        for start in nodes where state[start] == nil {
            // Iterative DFS so a 10 000-job chain cannot overflow the stack.
            var frames: [(node: String, next: Int)] = [(start, 0)]
            state[start] = 1
            stack.append(start)
            while let frame = frames.last {
                let targets = edges[frame.node] ?? []
                if frame.next < targets.count {
                    frames[frames.count - 1].next += 1
                    let target = targets[frame.next]
                    switch state[target] {
                    case 1?:
                        let index = stack.lastIndex(of: target) ?? 0
                        return Array(stack[index...])
                    case 2?:
                        continue
                    default:
                        state[target] = 1
                        stack.append(target)
                        frames.append((target, 0))
                    }
                } else {
                    state[frame.node] = 2
                    stack.removeLast()
                    frames.removeLast()
                }
            }
        }
        return nil
    }

    /// `targets` and everything they need, transitively, in the order of `nodes`.
    public static func closure(of targets: [String], nodes: [String], edges: [String: [String]]) -> [String] {
        var keep = Set<String>()
        var work = targets
        while let node = work.popLast() {
            if keep.insert(node).inserted { work.append(contentsOf: edges[node] ?? []) }
        }
        return nodes.filter { keep.contains($0) }
    }

    /// Every node reachable through `edges` from `node`, not including itself.
    public static func ancestors(of node: String, edges: [String: [String]]) -> Set<String> {
        var seen = Set<String>()
        var work = edges[node] ?? []
        while let next = work.popLast() {
            if seen.insert(next).inserted { work.append(contentsOf: edges[next] ?? []) }
        }
        return seen
    }

    /// A topological order (needs first), stable with respect to `nodes`.
    public static func topologicalOrder(nodes: [String], edges: [String: [String]]) -> [String] {
        var remaining: [String: Int] = [:]
        var dependents: [String: [String]] = [:]
        let known = Set(nodes)
        for node in nodes {
            let needs = (edges[node] ?? []).filter { known.contains($0) }
            remaining[node] = needs.count
            for need in needs { dependents[need, default: []].append(node) }
        }
        var ready = nodes.filter { remaining[$0] == 0 }
        var order: [String] = []
        var index = 0
        while index < ready.count {
            let node = ready[index]
            index += 1
            order.append(node)
            for dependent in dependents[node] ?? [] {
                remaining[dependent]! -= 1
                if remaining[dependent] == 0 { ready.append(dependent) }
            }
        }
        return order
    }
}
