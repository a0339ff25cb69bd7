// @ts-check
'use strict'
// The command line's grammar: commands, flags and their help (commander). Parsing only records
// which command was asked for with which values; main.js runs it.

const { Command, CommanderError, InvalidArgumentError, Option } = require('commander')

const { EXIT } = require('./exit.js')
const { escapeLines } = require('./format.js')

/** Dead-letter reasons a filter can name. */
const REASONS = ['retriesExhausted', 'rejected', 'invalidEnvelope', 'invalidData', 'deliveriesExhausted']

/** The states `tasks --state` lists, as `getTasks()` takes them (`failed` and `deadLettered` list the same). */
const TASK_STATES = ['waiting', 'delayed', 'running', 'retrying', 'completed', 'failed', 'deadLettered', 'cancelled']

/** The most tasks a page of `getTasks()` holds. */
const MAX_PAGE = 1000

/**
 * What the command line asked for.
 * @typedef {object} Selection
 * @property {string} command e.g. `stats`, `dlq list`
 * @property {string[]} args the command's arguments
 * @property {Record<string, any>} options its flags and the global flags
 */

/**
 * The outcome of parsing: a command to run, or an exit (help shown, or a usage error printed).
 * @typedef {{ run: Selection } | { exit: number }} Parsed
 */

/** @param {string} value */
function positiveInteger(value) {
  const n = Number(value)
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('must be an integer >= 1')
  return n
}

/** @param {string} value */
function pageSize(value) {
  const n = Number(value)
  if (!/^\d+$/.test(value) || n < 1 || n > MAX_PAGE) throw new InvalidArgumentError(`must be an integer from 1 to ${MAX_PAGE}`)
  return n
}

/** @param {string} value */
function port(value) {
  const n = Number(value)
  if (!/^\d+$/.test(value) || n > 65535) throw new InvalidArgumentError('must be a port number from 0 to 65535')
  return n
}

/** @param {string} value */
function interval(value) {
  const n = Number(value)
  if (!/^\d+$/.test(value) || n < 100 || n > 60_000) throw new InvalidArgumentError('must be a number of milliseconds from 100 to 60000')
  return n
}

/** @param {string} value */
function priority(value) {
  const n = Number(value)
  if (!/^\d+$/.test(value) || n < 1 || n > 10) throw new InvalidArgumentError('must be an integer from 1 (most urgent) to 10')
  return n
}

/** @param {string} value */
function milliseconds(value) {
  const n = Number(value)
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n)) throw new InvalidArgumentError('must be a whole number of milliseconds >= 0')
  return n
}

/** An ISO 8601 date, or date and time (to the minute or finer) with an optional offset. */
const ISO_TIME = /^(\d{4})-(\d{2})-(\d{2})(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?$/

/**
 * `text` as ms since the epoch: digits are ms already; else an ISO 8601 time
 * (`2030-01-01T09:00:00Z`; without an offset, local time as ISO 8601 says; a date alone is UTC
 * midnight, as JavaScript reads it). `undefined` for anything else: `yesterday`, `Jan 1 2030`
 * (which `Date.parse` takes), 30 February (which it rolls over to March).
 * @param {string} text
 * @returns {number | undefined}
 */
function epochMs(text) {
  if (/^\d+$/.test(text)) {
    const n = Number(text)
    return Number.isSafeInteger(n) ? n : undefined
  }
  const match = ISO_TIME.exec(text)
  if (!match) return undefined
  const [year, month, day] = match.slice(1, 4).map(Number)
  // `Date.parse` rolls 2030-02-30 over to 2 March: the day must be one of its month.
  if (month < 1 || month > 12 || new Date(Date.UTC(year, month - 1, day)).getUTCDate() !== day) return undefined
  const ms = Date.parse(text)
  return Number.isFinite(ms) ? ms : undefined
}

/** @param {string} value */
function time(value) {
  const ms = epochMs(value)
  if (ms === undefined) throw new InvalidArgumentError('must be an ISO 8601 time (2030-01-01T09:00:00Z) or ms since the epoch')
  return ms
}

const ENQUEUE_HELP = `
--id, --name, --priority, --delay, --run-at and --task-subject apply to every task enqueued. With
--envelope each value is a task object:
  { "data": ..., "metadata"?: {...}, "id"?, "name"?, "priority"?, "delay"?, "runAt"?, "subject"?,
    "maxRetries"?, "backoff"? }
("runAt": ms since the epoch or an ISO 8601 time); its own fields win over the flags. Priorities,
delays and task subjects need a queue made for them (options.priorities, options.schedules, a
subject tree): the command line never changes a queue.`

const WORKERS_HELP = `
A running worker (process() or processDLQ(), in any process) writes its record every 5 s: it is
listed while it runs, gone at once when it stops, and 20 s after its last record when it was
killed. "consumers" in stats counts the durable consumers, which stay when their workers stop;
"workers" counts the workers listed here. Times are the workers' hosts' clocks. --json prints
the list as getWorkers() gives it.`

const TASK_HELP = `
A task is found in every state: waiting, delayed ("run at": when it is due), running (its
attempt, when it started and its latest progress, asked of the live workers), retrying (its last
error; "run at": not before then), completed (with its result), deadLettered and cancelled. A
task that ended is found by its record: completed and cancelled ones only when the queue's
workers run with options.results, keepCompleted or keepFailed (within their limits); a
dead-lettered one also by its letter while that is stored. --json prints the task as getTask()
gives it.`

const TASKS_HELP = `
One state's tasks, newest first, --limit a page (100 unless told, at most 1000). When more may
follow, the last line gives the --cursor of the next page. waiting, retrying and delayed are
read from the task stream; running is asked of the live workers, in one page; completed, failed
(dead-lettered; deadLettered lists the same) and cancelled list the records the queue's workers
keep (options.keepCompleted, keepFailed or results): none without them. --json prints the page
as getTasks() gives it: { "tasks": [...], "cursor"? }, the cursor absent on the last page.`

const WAIT_HELP = `
Prints the task's result as JSON (--json: { "id", "result" }) once it completed; at once when it
ended already. A task that failed for good exits 1 with ERR_PQ_TASK_FAILED (its reason, attempts
and last error in the message); no outcome within --timeout exits 1 with ERR_PQ_TIMEOUT (also for
an unknown id). Outcomes are recorded only by workers whose queue has options.results: on a
queue whose workers never had it (no <stream>_HISTORY stream) it exits 1 at once.`

const DASHBOARD_HELP = `
The page lists every Protoqueue queue on the server: no --stream needed. It binds to 127.0.0.1
unless --host says otherwise; bound to any other address it needs a token (at least 16
characters) from --auth-token-file or PROTOQUEUE_DASHBOARD_TOKEN, and refuses to start without
one. Stops on Ctrl-C or SIGTERM.`

/**
 * @param {string} value
 * @param {string[] | undefined} previous
 */
const collect = (value, previous) => [...(previous ?? []), value]

const EXIT_CODES_HELP = `
Environment:
  NATS_URL                        server URL(s), as --server
  PROTOQUEUE_STREAM, PROTOQUEUE_SUBJECT   the queue, as --stream and --subject
  NATS_CREDS, NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_NKEY_SEED   credentials
  NATS_CA, NATS_CERT, NATS_KEY    TLS files, as --tls-ca, --tls-cert, --tls-key

Exit codes:
  0  done
  1  the operation failed (its ERR_PQ_* code is printed: a task waited for failed for good or
     the wait timed out), what it names was not found (a dead letter, a task, a delayed task to
     cancel, a recurring task to unschedule), or a confirmation was declined
  2  usage error: unknown command or flag, bad or missing value, --yes needed
  3  could not connect: no server, credentials refused, TLS failed`

/**
 * The `protoqueue` program; `select` is called with the command the arguments name.
 * @param {(selection: Selection) => void} select
 * @param {{ writeOut: (text: string) => void, writeErr: (text: string) => void }} output
 * @param {string} version
 */
function buildProgram(select, output, version) {
  const program = new Command('protoqueue')
  program
    .description('Operate Protoqueue queues: list them; a queue\'s statistics, live workers, dead letters, pause/resume, purge, enqueue, a task looked up or waited for, tasks listed by state, delayed and recurring tasks, delete.')
    .version(version, '-V, --version')
    .exitOverride()
    // Errors quote the arguments (an id pasted from elsewhere): shown escaped, as all output.
    .configureOutput({ writeOut: output.writeOut, writeErr: output.writeErr, outputError: (text, write) => write(escapeLines(text)) })
    .configureHelp({ showGlobalOptions: true })
    .showHelpAfterError('(add --help for usage)')
    .addHelpText('after', EXIT_CODES_HELP)
    .option('-s, --server <url>', 'NATS server URL, or a comma-separated list, without credentials (default: NATS_URL, which may hold them, else nats://localhost:4222)')
    .option('--stream <name>', 'the queue\'s stream (default: PROTOQUEUE_STREAM)')
    .option('--subject <subject>', 'the queue\'s subject (default: PROTOQUEUE_SUBJECT, else the one its stream holds)')
    .option('--creds <file>', 'a .creds file (JWT and NKey seed) (default: NATS_CREDS)')
    .option('--user <name>', 'user name; the password comes from --password-file or NATS_PASSWORD (default: NATS_USER)')
    .option('--password-file <file>', 'a file holding the password of --user')
    .option('--token-file <file>', 'a file holding the token (default: NATS_TOKEN)')
    // Secrets as flags would show in `ps` and shell history: refused with a pointer (config.js).
    .addOption(new Option('--password <secret>').hideHelp())
    .addOption(new Option('--token <secret>').hideHelp())
    .option('--nkey <file>', 'a file holding the NKey user seed (default: NATS_NKEY_SEED)')
    .option('--tls', 'require TLS')
    .option('--tls-ca <file>', 'CA certificate(s) to trust (default: NATS_CA)')
    .option('--tls-cert <file>', 'client certificate, for mutual TLS (default: NATS_CERT)')
    .option('--tls-key <file>', 'private key of --tls-cert (default: NATS_KEY)')
    .option('--tls-handshake-first', 'start TLS before the server\'s greeting')
    .addOption(new Option('--connect-timeout <ms>', 'how long to try to connect').argParser(positiveInteger))
    .option('--json', 'print JSON (for scripts) instead of tables')

  /**
   * @param {Command} command
   * @param {string} name
   */
  const runs = (command, name) =>
    command.action((...values) => {
      const self = /** @type {Command} */ (values[values.length - 1])
      const args = values.slice(0, -2).flat().filter((value) => value !== undefined)
      select({ command: name, args, options: self.optsWithGlobals() })
    })

  /**
   * A command that asks before it changes a queue, unless `--yes`.
   * @param {Command} command
   */
  const confirms = (command) => command.option('-y, --yes', 'do not ask for confirmation (required when not on a terminal)')

  runs(program.command('queues').description('list every Protoqueue queue on the server (no --stream needed)'), 'queues')
  runs(program.command('stats').description('show the queue\'s statistics'), 'stats')
  runs(
    program
      .command('workers')
      .description('list the queue\'s live workers, in any process: host, pid, since when, tasks in flight, last seen')
      .addHelpText('after', WORKERS_HELP),
    'workers',
  )

  const dlq = program.command('dlq').description('dead letters: list, show, requeue, purge')
  runs(
    dlq
      .command('list')
      .description('list dead letters, oldest first: sequence, task id, reason, attempts, failed at, error')
      .addOption(new Option('--limit <n>', 'at most this many').argParser(positiveInteger).default(100)),
    'dlq list',
  )
  runs(
    dlq
      .command('show')
      .description('show one dead letter in full: its data (JSON, or base64 bytes), metadata, details')
      .argument('<letter>', 'its sequence number (digits) or its task id'),
    'dlq show',
  )
  /** @param {Command} command */
  const filters = (command) =>
    confirms(command)
      .addOption(new Option('--id <task-id>', 'only this task\'s letter (repeatable)').argParser(collect))
      .addOption(new Option('--reason <reason>', 'only letters with this reason').choices(REASONS))
      .addOption(new Option('--limit <n>', 'at most this many letters, oldest first').argParser(positiveInteger))
  runs(filters(dlq.command('requeue').description('put the tasks of dead letters back on the queue (all, or those the filters pick)')), 'dlq requeue')
  runs(filters(dlq.command('purge').description('remove dead letters (all, or those the filters pick)')), 'dlq purge')

  runs(program.command('pause').description('pause every worker of the queue, in every process, until resume'), 'pause')
  runs(program.command('resume').description('resume the queue\'s workers'), 'resume')
  runs(
    confirms(program.command('purge').description('remove the tasks waiting in the queue (not those in flight)')),
    'purge',
  )
  runs(
    confirms(
      program
        .command('delete')
        .description('delete the queue and everything it holds: tasks, delayed and recurring tasks, dead letters (refused while workers run)'),
    ).option('--force', 'delete it even while workers run (those still running make it again, empty)'),
    'delete',
  )
  runs(
    program
      .command('enqueue')
      .description('enqueue tasks: one JSON value as the argument, or "-" to read one task per line from stdin')
      .argument('<json>', 'the task\'s data as JSON, or "-" for stdin')
      .option('--envelope', 'each value is a task object, { "data": ..., "metadata"?: {...}, ... }, rather than the data alone')
      .option('--id <id>', 'the task\'s own id instead of a new one (every task read from stdin gets it: stored once)')
      .option('--name <name>', 'the task\'s name (task.name)')
      .addOption(new Option('--priority <1-10>', 'the task\'s priority, 1 most urgent (a queue with priorities)').argParser(priority))
      .addOption(new Option('--delay <ms>', 'hand the task to workers this many ms from now (a queue with schedules)').argParser(milliseconds).conflicts('runAt'))
      .addOption(new Option('--run-at <time>', 'hand the task to workers at this time: ISO 8601 or ms since the epoch (a queue with schedules)').argParser(time))
      .option('--task-subject <subject>', 'the task\'s subject in a queue over a subject tree, e.g. tasks.email.eu (--subject names the queue)')
      .option('-q, --quiet', 'print how many were enqueued, not their ids')
      .addOption(new Option('--batch-size <n>', 'tasks sent per batch when reading stdin').argParser(positiveInteger).default(500))
      .addHelpText('after', ENQUEUE_HELP),
    'enqueue',
  )
  runs(program.command('schedules').description('list the queue\'s recurring tasks'), 'schedules')
  runs(
    program
      .command('unschedule')
      .description('remove the recurring task <name> (exit 1 when there is none)')
      .argument('<name>', 'the recurring task\'s name'),
    'unschedule',
  )
  runs(
    program
      .command('cancel')
      .description('cancel a task: delayed, waiting, waiting for a retry or running (its handler is stopped); exit 1 when it ended first or nothing is known of it')
      .argument('<id>', 'the task\'s id, as enqueue printed it'),
    'cancel',
  )
  runs(
    program
      .command('task')
      .description('show what the server knows of a task, in any state: waiting, delayed, running, retrying, completed (with its result), dead-lettered or cancelled (exit 1 when nothing has it)')
      .argument('<id>', 'the task\'s id, as enqueue printed it')
      .addHelpText('after', TASK_HELP),
    'task',
  )
  runs(
    program
      .command('tasks')
      .description('list the tasks of one state, newest first, a page at a time: id, state, attempts, enqueued, then what the state has (times, result, error)')
      .addOption(new Option('--state <state>', 'the state to list').choices(TASK_STATES).makeOptionMandatory())
      .addOption(new Option('--limit <n>', `tasks per page, 1 to ${MAX_PAGE}`).argParser(pageSize).default(100))
      .option('--cursor <cursor>', 'start at this page: the cursor the previous page printed')
      .addHelpText('after', TASKS_HELP),
    'tasks',
  )
  runs(
    program
      .command('wait')
      .description('wait for a task to end and print its result as JSON (exit 1 when it failed for good or the time ran out)')
      .argument('<id>', 'the task\'s id, as enqueue printed it')
      .addOption(new Option('--timeout <ms>', 'how long to wait').argParser(milliseconds).default(30_000))
      .addHelpText('after', WAIT_HELP),
    'wait',
  )
  runs(
    program
      .command('dashboard')
      .description('serve the web dashboard: every queue on the server, live throughput, dead letters, pause/resume')
      .addOption(new Option('--port <n>', 'the port (0: any free one)').argParser(port).default(3000))
      .addOption(new Option('--host <address>', 'the address to listen on; any but a loopback address needs a token').default('127.0.0.1'))
      .option('--auth-token-file <file>', 'a file holding the token that requeue, purge, pause and resume need (default: PROTOQUEUE_DASHBOARD_TOKEN)')
      .addOption(new Option('--interval <ms>', 'how often every queue\'s statistics are read').argParser(interval).default(1000))
      .addHelpText('after', DASHBOARD_HELP),
    'dashboard',
  )
  runs(
    program
      .command('metrics')
      .description(
        'print the queue\'s metrics in the Prometheus text format (--json: as objects): the server\'s gauges; ' +
          'counters and histograms count what one process did, so they are 0 here',
      ),
    'metrics',
  )
  return program
}

/**
 * Parses `argv` (without `node` and the script). Help and usage errors are written to `output`.
 * @param {string[]} argv
 * @param {{ writeOut: (text: string) => void, writeErr: (text: string) => void }} output
 * @param {string} version
 * @returns {Parsed}
 */
function parseCommandLine(argv, output, version) {
  /** @type {Selection | undefined} */
  let selected
  const program = buildProgram((selection) => (selected = selection), output, version)
  try {
    program.parse(argv, { from: 'user' })
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return { exit: EXIT.OK }
    // `protoqueue help [command]` (exit code 0), or help shown for a missing subcommand (1).
    if (err.code === 'commander.help' && err.exitCode === 0) return { exit: EXIT.OK }
    return { exit: EXIT.USAGE }
  }
  if (!selected) {
    output.writeErr(program.helpInformation())
    return { exit: EXIT.USAGE }
  }
  return { run: selected }
}

module.exports = { parseCommandLine, epochMs, REASONS }
