/// One runnable unit: a job, or one matrix combination of it.
public struct JobInstance: Sendable, Hashable, Codable {
    public var jobID: String
    public var matrix: MatrixCombination?

    public init(jobID: String, matrix: MatrixCombination? = nil) {
        self.jobID = jobID
        self.matrix = matrix
    }

    /// Unique within a run: "build", "test (1, linux)".
    public var key: String {
        guard let matrix, !matrix.entries.isEmpty else { return jobID }
        return "\(jobID) (\(matrix.label))"
    }
}

/// The jobs of one run, expanded, in topological order.
public struct RunPlan: Sendable {
    public var pipeline: Pipeline
    public var instances: [JobInstance]
    /// What each job needs (job ids).
    public var needs: [String: [String]]

    public init(pipeline: Pipeline, selecting targets: [String]? = nil, matrixContext: ExpressionContext = .init()) throws(CoreError) {
        self.pipeline = pipeline
        var edges: [String: [String]] = [:]
        for job in pipeline.jobs { edges[job.id] = job.needs }
        needs = edges
        var ids = pipeline.jobs.map(\.id)
        // By id once: `Pipeline.job` scans, which a thousand jobs make quadratic.
        let jobsByID = pipeline.jobsByID
        if let targets, !targets.isEmpty {
            for target in targets where jobsByID[target] == nil {
                let suggestion = Suggestion.nearest(to: target, in: ids)
                throw CoreError("no job named '\(target)' in \(pipeline.file)" + (suggestion.map { "; did you mean '\($0)'?" } ?? "; jobs: \(ids.joined(separator: ", "))"))
            }
            ids = DAG.closure(of: targets, nodes: ids, edges: edges)
        }
        let order = DAG.topologicalOrder(nodes: ids, edges: edges)
        var instances: [JobInstance] = []
        for id in order {
            guard let job = jobsByID[id] else { continue }
            if let matrix = job.matrix {
                for combination in MatrixExpansion.expand(matrix) {
                    var rendered = combination
                    for index in rendered.entries.indices {
                        let raw = rendered.entries[index].value
                        guard Template.mayHoldExpressions(raw) else { continue }
                        do {
                            rendered.entries[index].value = try Template(parsing: raw).render(in: matrixContext)
                        } catch {
                            throw CoreError("job '\(id)': matrix value '\(raw)': \(error.message)")
                        }
                    }
                    instances.append(JobInstance(jobID: id, matrix: rendered))
                }
            } else {
                instances.append(JobInstance(jobID: id))
            }
        }
        self.instances = instances
    }
}
