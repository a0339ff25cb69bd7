// @ts-check
'use strict'
// Serving a queue's metrics from a `prom-client` registry the application already has.
//
// prom-client collects a registry by calling `get()` on each registered metric and formatting
// the `{ name, help, type, values: [{ metricName?, labels, value }] }` it resolves to (the same
// shape `getMetricsAsJSON()` returns). Each Protoqueue family is registered as such a metric; the
// values come from the native core (`getMetricFamilies()`), read once per collection however
// many families the registry asks for. prom-client itself is not loaded here: the application
// passes its registry in, so it stays an optional dependency.

/**
 * A metric family as `getMetricFamilies()` gives it.
 * @typedef {object} Family
 * @property {string} name
 * @property {string} help
 * @property {'counter' | 'gauge' | 'histogram'} type
 * @property {Array<{ metricName: string, labels: Record<string, string>, value: number }>} values
 */

/**
 * What this needs of a queue.
 * @typedef {{ getMetricFamilies(): Promise<Family[]> }} MetricSource
 */

/**
 * What this needs of a prom-client `Registry`.
 * @typedef {{ registerMetric(metric: any): void, removeSingleMetric?(name: string): void, getSingleMetric?(name: string): unknown }} Registry
 */

/**
 * The queues whose metrics each registry serves (how many registrations named each): a registry
 * holds a metric name once, so later calls add their queues to the first call's metrics.
 * @type {WeakMap<Registry, Map<MetricSource, number>>}
 */
const served = new WeakMap()

/**
 * The family names every queue has (from `getMetricFamilies()`); fixed, so registering needs no
 * connection.
 */
const FAMILIES = /** @type {const} */ ([
  ['protoqueue_tasks_enqueued_total', 'counter'],
  ['protoqueue_tasks_completed_total', 'counter'],
  ['protoqueue_task_attempts_failed_total', 'counter'],
  ['protoqueue_tasks_retried_total', 'counter'],
  ['protoqueue_tasks_dead_lettered_total', 'counter'],
  ['protoqueue_handler_duration_seconds', 'histogram'],
  ['protoqueue_task_wait_seconds', 'histogram'],
  ['protoqueue_tasks_pending', 'gauge'],
  ['protoqueue_tasks_in_flight', 'gauge'],
  ['protoqueue_tasks_delayed', 'gauge'],
  ['protoqueue_dead_letters', 'gauge'],
  ['protoqueue_consumers', 'gauge'],
])

/**
 * Registers the metrics of `queues` (one queue or several; each series has its own `queue`
 * label; objects of the same queue add up) in a prom-client `registry`. A collection reads each
 * queue once; when a queue's gauges cannot be read (not connected: `ERR_PQ_NOT_CONNECTED`; server
 * unreachable: `ERR_PQ_TIMEOUT` within 5 s) the collection rejects with that error. Called again
 * for the same registry (another part of the application, other queues), it adds its queues to
 * the same metrics. Returns a function that unregisters the queues of this call (the metrics
 * themselves once no queue is left).
 * @param {Registry} registry
 * @param {MetricSource | MetricSource[]} queues
 * @returns {() => void}
 */
function registerMetrics(registry, queues) {
  const sources = Array.isArray(queues) ? [...queues] : [queues]
  if (registry === null || typeof registry !== 'object' || typeof registry.registerMetric !== 'function') {
    throw new TypeError('registerMetrics(registry, queues): registry must be a prom-client Registry')
  }
  for (const source of sources) {
    if (source === null || typeof source !== 'object' || typeof source.getMetricFamilies !== 'function') {
      throw new TypeError('registerMetrics(registry, queues): queues must be Protoqueue objects')
    }
  }
  let counts = served.get(registry)
  // Registered already — unless the registry was cleared since (`registry.clear()`).
  const present = counts !== undefined && (typeof registry.getSingleMetric !== 'function' || registry.getSingleMetric(FAMILIES[0][0]) !== undefined)
  if (!counts || !present) {
    counts = new Map()
    served.set(registry, counts)
    register(registry, counts)
  }
  const live = counts
  for (const source of sources) live.set(source, (live.get(source) ?? 0) + 1)
  let done = false
  return () => {
    if (done) return
    done = true
    for (const source of sources) {
      const left = (live.get(source) ?? 1) - 1
      if (left > 0) live.set(source, left)
      else live.delete(source)
    }
    if (live.size === 0 && served.get(registry) === live) {
      served.delete(registry)
      for (const [name] of FAMILIES) registry.removeSingleMetric?.(name)
    }
  }
}

/**
 * Registers Protoqueue's families in `registry`, each collection reading the queues `counts`
 * holds then.
 * @param {Registry} registry
 * @param {Map<MetricSource, number>} counts
 */
function register(registry, counts) {
  /** @type {Promise<Map<string, Family>> | undefined} */
  let reading
  // All of a collection's `get()` calls start in one turn: they share one read.
  const read = () => {
    reading ??= Promise.all([...counts.keys()].map((source) => source.getMetricFamilies())).then(
      (perQueue) => {
        reading = undefined
        return merge(perQueue)
      },
      (err) => {
        reading = undefined
        throw err
      },
    )
    return reading
  }
  for (const [name, type] of FAMILIES) {
    registry.registerMetric({
      name,
      help: name,
      type,
      aggregator: type === 'gauge' ? 'omit' : 'sum',
      async get() {
        const family = (await read()).get(name)
        return family ?? { name, help: name, type, values: [], aggregator: 'sum' }
      },
      reset() {},
    })
  }
}

/**
 * The families of several queues as one registry holds them.
 * @param {Family[][]} perQueue
 * @returns {Map<string, Family>}
 */
function merge(perQueue) {
  /** @type {Map<string, Family>} */
  const merged = new Map()
  /** @type {Map<string, Family['values'][number]>} */
  const series = new Map()
  for (const families of perQueue) {
    for (const family of families) {
      let known = merged.get(family.name)
      if (!known) {
        known = { ...family, values: [] }
        merged.set(family.name, known)
      }
      for (const sample of family.values) {
        // Two objects of one queue (a producer and a worker) give the same series: a
        // registry may hold each once, so counts add up and gauges (the server's) are one.
        const key = `${sample.metricName}\0${JSON.stringify(sample.labels)}`
        const same = series.get(key)
        if (same === undefined) {
          const copy = { ...sample }
          series.set(key, copy)
          known.values.push(copy)
        } else if (family.type !== 'gauge') {
          same.value += sample.value
        }
      }
    }
  }
  return merged
}

module.exports = { registerMetrics, FAMILIES }
