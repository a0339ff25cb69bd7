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
 * @typedef {{ registerMetric(metric: any): void, removeSingleMetric?(name: string): void }} Registry
 */

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
 * label; objects of the same queue add up) in a prom-client `registry`. A collection reads each queue once; when a queue's gauges
 * cannot be read (not connected: `ERR_PQ_NOT_CONNECTED`; server unreachable: `ERR_PQ_TIMEOUT`
 * within 5 s) the collection rejects with that error. Returns a function that unregisters them.
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
  /** @type {Promise<Map<string, Family>> | undefined} */
  let reading
  // All of a collection's `get()` calls start in one turn: they share one read.
  const read = () => {
    reading ??= Promise.all(sources.map((source) => source.getMetricFamilies())).then(
      (perQueue) => {
        reading = undefined
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
  return () => {
    for (const [name] of FAMILIES) registry.removeSingleMetric?.(name)
  }
}

module.exports = { registerMetrics, FAMILIES }
