// @ts-check
'use strict'
// Serializers: how a queue encodes task data that is not JSON. JSON (the default) never comes
// here: lib/tasks.js passes it to the native side as JSON text, as it always did. A queue with
// `serializer` or `schema` encodes every task with that serializer and labels it with its
// content type; its workers decode the tasks of that content type (and JSON tasks, so producers of
// both kinds can share a queue during a migration). Tasks of any other content type never reach
// the handler: the native side dead-letters them as `invalidData`, naming the content type.

const { describe, keyPath, messageOf } = require('./describe.js')
const { ProtoqueueError } = require('./errors.js')
const { isWellFormed } = require('./unicode.js')

/**
 * How one queue encodes and decodes task data.
 * @typedef {object} Codec
 * @property {string} kind `raw`, `msgpack`, `protobuf` or `custom`
 * @property {string} contentType what every task this queue enqueues is labelled with
 * @property {(data: unknown, what: string) => Buffer} encode the data's bytes, or a ProtoqueueError
 *   (`ERR_PQ_SERIALIZE`)
 * @property {(bytes: Buffer, contentType: string) => unknown} decode the data of a task of this
 *   codec's media type; throws when it cannot be decoded
 * @property {((data: unknown) => unknown) | undefined} fromJson what the handler gets for a task
 *   whose data is JSON (`undefined`: the JSON value itself); throws when it does not fit
 */

/** Content types of the built-in serializers. */
const CONTENT_TYPES = {
  raw: 'application/octet-stream',
  msgpack: 'application/x-msgpack',
  protobuf: 'application/x-protobuf',
}

/**
 * The media type of a content type (before its parameters), lower-cased.
 * @param {string} contentType
 */
function essence(contentType) {
  const end = contentType.indexOf(';')
  return (end === -1 ? contentType : contentType.slice(0, end)).trim().toLowerCase()
}

/**
 * The value of parameter `name` of a content type, if it has one.
 * @param {string} contentType
 * @param {string} name
 * @returns {string | undefined}
 */
function parameter(contentType, name) {
  for (const part of contentType.split(';').slice(1)) {
    const at = part.indexOf('=')
    if (at !== -1 && part.slice(0, at).trim().toLowerCase() === name.toLowerCase()) {
      return part.slice(at + 1).trim().replace(/^"(.*)"$/, '$1')
    }
  }
  return undefined
}

/**
 * `bytes` as a Buffer of its own (a serializer may reuse its output buffer; the caller may change
 * its input after `enqueue` returns).
 * @param {Uint8Array} bytes
 */
function ownBuffer(bytes) {
  return Buffer.from(bytes)
}

/**
 * Loads an optional package, or fails with ERR_PQ_INVALID_CONFIG saying how to install it.
 * @param {string} name
 * @param {string} what
 */
function optional(name, what) {
  try {
    return require(name)
  } catch (err) {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `invalid configuration: ${what} needs the package ${name}; install it (npm install ${name})`, { cause: err })
  }
}

/** @returns {Codec} */
function rawCodec() {
  return {
    kind: 'raw',
    contentType: CONTENT_TYPES.raw,
    encode(data, what) {
      if (!(data instanceof Uint8Array)) {
        throw new ProtoqueueError('ERR_PQ_SERIALIZE', `${what} must be a Buffer or Uint8Array with serializer 'raw', got ${describe(data)}`)
      }
      return ownBuffer(data)
    },
    decode: (bytes) => bytes,
    fromJson: undefined,
  }
}

/** Thrown by msgpackr's `writeFunction` hook: the data holds a function. */
class FunctionInData extends Error {}

/**
 * The path of the first value of type `type` in `value`, walked as msgpackr writes it (own keys of
 * objects, array items, Map keys and values, Set items), or `undefined`.
 * @param {unknown} value
 * @param {'function' | 'symbol'} type
 * @param {string} path
 * @param {Set<unknown>} seen
 * @returns {string | undefined}
 */
function pathOf(value, type, path, seen = new Set()) {
  if (typeof value === type) return path
  if (typeof value !== 'object' || value === null || seen.has(value) || ArrayBuffer.isView(value)) return undefined
  seen.add(value)
  /** @type {Array<[string, unknown]>} */
  let entries
  if (Array.isArray(value)) entries = value.map((item, i) => [`${path}[${i}]`, item])
  else if (value instanceof Map) entries = [...value].flatMap(([key, item], i) => [[`${path} (key ${i} of the Map)`, key], [`${path}.get(${typeof key === 'string' ? JSON.stringify(key) : describe(key)})`, item]])
  else if (value instanceof Set) entries = [...value].map((item, i) => [`${path} (item ${i} of the Set)`, item])
  else entries = Object.keys(value).map((key) => [`${path}${keyPath(key)}`, /** @type {any} */ (value)[key]])
  for (const [at, item] of entries) {
    const found = pathOf(item, type, at, seen)
    if (found !== undefined) return found
  }
  return undefined
}

/** @returns {Codec} */
function msgpackCodec() {
  const { Packr } = optional('msgpackr', "serializer 'msgpack'")
  const packr = new Packr({
    // Plain MessagePack (no msgpackr record extension), so other languages' libraries read it.
    useRecords: false,
    moreTypes: false,
    // msgpackr writes a function as undefined, as JSON.stringify drops it: refuse it instead.
    writeFunction: () => {
      throw new FunctionInData()
    },
  })
  return {
    kind: 'msgpack',
    contentType: CONTENT_TYPES.msgpack,
    encode(data, what) {
      if (data === undefined || typeof data === 'function' || typeof data === 'symbol') {
        throw new ProtoqueueError('ERR_PQ_SERIALIZE', `${what} cannot be encoded as MessagePack (got ${describe(data)})`)
      }
      try {
        return ownBuffer(packr.pack(data))
      } catch (err) {
        // A function (refused by writeFunction) or a symbol (msgpackr: "Unknown type") inside:
        // name where, as the JSON path does.
        const type = err instanceof FunctionInData ? 'function' : /symbol/.test(messageOf(err)) ? 'symbol' : undefined
        let path
        try {
          path = type === undefined ? undefined : pathOf(data, type, what)
        } catch {
          // Reading it again threw: name the whole value.
        }
        if (path !== undefined) throw new ProtoqueueError('ERR_PQ_SERIALIZE', `${path} is a ${type}, which MessagePack cannot hold`)
        const why = err instanceof FunctionInData ? 'it holds a function' : messageOf(err)
        throw new ProtoqueueError('ERR_PQ_SERIALIZE', `${what} cannot be encoded as MessagePack: ${why}`, { cause: err })
      }
    },
    decode: (bytes) => packr.unpack(bytes),
    fromJson: undefined,
  }
}

/**
 * Whether `schema` looks like a protobuf-es v2 message schema (`GenMessage`, what protoc-gen-es
 * generates as `FooSchema`).
 * @param {any} schema
 */
function isMessageSchema(schema) {
  return typeof schema === 'object' && schema !== null && schema.kind === 'message' && typeof schema.typeName === 'string' && schema.typeName !== '' && Array.isArray(schema.fields)
}

/** How deep messages may nest in task data: the recursion limit of protobuf's C++ and Java parsers. */
const MAX_MESSAGE_DEPTH = 100

/**
 * A checker of data for a protobuf-es schema, before `create()` and `toBinary()` see it: they
 * take what they are given and coerce what does not fit (`7` for a string field is written "7",
 * an object for a repeated field `[]`, `{ a: 1 }` for a string "[object Object]", a key that is no
 * field is dropped). protobuf-es checks values only in its reflect API (`reflect(…).set`,
 * `ReflectList.add`, `ReflectMap.set`: its `checkField`), so the leaves are checked there, with
 * its rules and words (int32 range, int64 as bigint, number or string, well-formed UTF-8,
 * `Uint8Array` for bytes); the walk through the init object's shape — which keys are fields,
 * messages, lists, maps, oneof groups, and the well-known types protobuf-es holds unwrapped
 * (wrappers as their scalar, `google.protobuf.Struct` as a JSON object) — is done here, following
 * what `create()` reads. `fromJson()` is strict too, but about the JSON form, not init objects
 * (int64 as strings, bytes as base64, oneofs flat, Timestamp as text), so it cannot judge them.
 * @param {any} protobuf the module `@bufbuild/protobuf`
 * @param {any} reflectApi the module `@bufbuild/protobuf/reflect`
 * @param {any} wkt the module `@bufbuild/protobuf/wkt`
 */
function fieldChecker(protobuf, reflectApi, wkt) {
  const { BOOL, BYTES, INT32, UINT32, SINT32, FIXED32, SFIXED32 } = protobuf.ScalarType
  /** One ReflectMessage per message type whose `set` checks a value (cleared again at once). */
  const scratches = new WeakMap()
  /** @param {any} desc */
  const scratch = (desc) => {
    let message = scratches.get(desc)
    if (message === undefined) {
      message = reflectApi.reflect(desc, undefined, true)
      scratches.set(desc, message)
    }
    return message
  }
  /**
   * A bytes value as protobuf-es's `create()` takes it: an array of bytes becomes a Uint8Array.
   * @param {any} field
   * @param {unknown} value
   */
  const bytesOf = (field, value) => {
    if (field.scalar !== BYTES || !Array.isArray(value)) return value
    for (const byte of value) if (!Number.isInteger(byte) || byte < 0 || byte > 255) return value
    return Uint8Array.from(value)
  }

  /**
   * Why a singular scalar or enum value does not fit `field` (of its message), or `undefined`.
   * @param {any} field
   * @param {unknown} value
   * @returns {string | undefined}
   */
  const scalarReason = (field, value) => {
    const message = scratch(field.parent)
    try {
      message.set(field, bytesOf(field, value))
    } catch (err) {
      return messageOf(err)
    } finally {
      message.clear(field)
    }
    return undefined
  }

  /**
   * A map key (an object key, so a string) as the reflect API takes it for `field`'s key type,
   * or `undefined` when it is none.
   * @param {any} field
   * @param {string} key
   */
  const mapKey = (field, key) => {
    switch (field.mapKey) {
      case BOOL:
        return key === 'true' ? true : key === 'false' ? false : undefined
      case INT32: case UINT32: case SINT32: case FIXED32: case SFIXED32: {
        // Only the canonical text of a number, as a JavaScript object writes its keys.
        const number = Number(key)
        return String(number) === key ? number : undefined
      }
      default:
        return key // a string, or a 64-bit integer that the check parses
    }
  }

  /**
   * Why `value` is no JSON value (what protobuf-es takes for `google.protobuf.Struct`), or `undefined`.
   * @param {unknown} value
   * @param {string} path
   * @param {number} depth
   * @returns {{ path: string, reason: string } | undefined}
   */
  const jsonReason = (value, path, depth) => {
    if (depth > MAX_MESSAGE_DEPTH) return { path, reason: `nested more than ${MAX_MESSAGE_DEPTH} deep` }
    if (value === null || typeof value === 'boolean' || typeof value === 'number') return undefined
    if (typeof value === 'string') {
      return isWellFormed(value) ? undefined : { path, reason: 'a string with a lone surrogate is not valid UTF-8' }
    }
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        const found = jsonReason(value[i], `${path}[${i}]`, depth + 1)
        if (found !== undefined) return found
      }
      return undefined
    }
    if (isPlainObject(value)) {
      for (const key of Object.keys(value)) {
        const found = jsonReason(value[key], `${path}${keyPath(key)}`, depth + 1)
        if (found !== undefined) return found
      }
      return undefined
    }
    return { path, reason: `expected a JSON value (google.protobuf.Struct), got ${describe(value)}` }
  }

  /**
   * Why one value of a message type (a singular field, a list item, a map value, a oneof case)
   * does not fit, or `undefined`. `field` tells how protobuf-es holds it.
   * @param {any} field
   * @param {unknown} value
   * @param {string} path
   * @param {number} depth
   * @param {boolean} unwrapped whether a wrapper type is held as its scalar here
   * @returns {{ path: string, reason: string } | undefined}
   */
  const messageValueReason = (field, value, path, depth, unwrapped) => {
    const desc = field.message
    if (desc.typeName === 'google.protobuf.Struct' && field.parent.typeName !== 'google.protobuf.Value') {
      if (!isPlainObject(value)) return { path, reason: `expected a JSON object (google.protobuf.Struct), got ${describe(value)}` }
      return jsonReason(value, path, depth)
    }
    if (unwrapped && wkt.isWrapperDesc(desc)) {
      const reason = scalarReason(desc.fields[0], value)
      return reason === undefined ? undefined : { path, reason }
    }
    return messageReason(desc, value, path, depth + 1)
  }

  /**
   * Why `init` (a message or its init object) is not a message of `desc` exactly as given, or
   * `undefined`.
   * @param {any} desc
   * @param {unknown} init
   * @param {string} path
   * @param {number} depth
   * @returns {{ path: string, reason: string } | undefined}
   */
  const messageReason = (desc, init, path, depth) => {
    if (typeof init !== 'object' || init === null || Array.isArray(init) || init instanceof Uint8Array) {
      return { path, reason: `expected a ${desc.typeName} message or its init object, got ${describe(init)}` }
    }
    if (depth > MAX_MESSAGE_DEPTH) {
      return { path, reason: `messages nested more than ${MAX_MESSAGE_DEPTH} deep (a cycle?), which Protobuf parsers refuse` }
    }
    /** @type {any} */
    const given = init
    if (given.$typeName !== undefined && given.$typeName !== desc.typeName) {
      return { path, reason: `a ${String(given.$typeName)} message where a ${desc.typeName} belongs` }
    }
    for (const key of Object.keys(given)) {
      if (key === '$typeName' || key === '$unknown') continue
      if (desc.field[key] === undefined && !desc.oneofs.some((/** @type {any} */ oneof) => oneof.localName === key)) {
        return { path: `${path}.${key}`, reason: `not a field of ${desc.typeName} (protobuf-es would drop it)` }
      }
    }
    for (const field of desc.fields) {
      if (field.oneof !== undefined) continue
      const value = given[field.localName]
      if (value === undefined || value === null) continue
      const at = `${path}.${field.localName}`
      const found = fieldReason(field, value, at, depth)
      if (found !== undefined) return found
    }
    for (const oneof of desc.oneofs) {
      const value = given[oneof.localName]
      if (value === undefined || value === null) continue
      const at = `${path}.${oneof.localName}`
      if (typeof value !== 'object' || Array.isArray(value)) {
        return { path: at, reason: `expected a oneof { case, value }, got ${describe(value)}` }
      }
      if (value.case === undefined || value.case === null) continue
      const field = oneof.fields.find((/** @type {any} */ f) => f.localName === value.case)
      if (field === undefined) {
        return { path: `${at}.case`, reason: `expected one of ${oneof.fields.map((/** @type {any} */ f) => JSON.stringify(f.localName)).join(', ')}, got ${describe(value.case)}` }
      }
      const found = field.fieldKind === 'message'
        ? messageValueReason(field, value.value, `${at}.value`, depth, false)
        : reasonAt(`${at}.value`, scalarReason(field, value.value))
      if (found !== undefined) return found
    }
    return undefined
  }

  /**
   * @param {any} field a field outside any oneof, set (not `undefined` or `null`)
   * @param {any} value
   * @param {string} path
   * @param {number} depth
   * @returns {{ path: string, reason: string } | undefined}
   */
  const fieldReason = (field, value, path, depth) => {
    switch (field.fieldKind) {
      case 'scalar':
      case 'enum':
        return reasonAt(path, scalarReason(field, value))
      case 'message':
        return messageValueReason(field, value, path, depth, true)
      case 'list': {
        if (!Array.isArray(value)) return { path, reason: `expected an array, got ${describe(value)}` }
        const list = field.listKind === 'message' ? undefined : reflectApi.reflectList(field, [], true)
        for (let i = 0; i < value.length; i++) {
          const at = `${path}[${i}]`
          if (list === undefined) {
            const found = messageValueReason(field, value[i], at, depth, false)
            if (found !== undefined) return found
            continue
          }
          try {
            list.add(bytesOf(field, value[i]))
          } catch (err) {
            return { path: at, reason: messageOf(err) }
          }
        }
        return undefined
      }
      case 'map': {
        if (!isPlainObject(value)) {
          return { path, reason: `expected an object of map entries, got ${describe(value)}` }
        }
        const map = reflectApi.reflectMap(field, {}, true)
        for (const key of Object.keys(value)) {
          const at = `${path}${keyPath(key)}`
          const reflectKey = mapKey(field, key)
          if (reflectKey === undefined) return { path: at, reason: `${JSON.stringify(key)} is not a key of this map's key type` }
          const entry = value[key]
          try {
            // A message value is checked below; its key with a message of the right type.
            map.set(reflectKey, field.mapKind === 'message' ? scratch(field.message) : bytesOf(field, entry))
          } catch (err) {
            return { path: at, reason: messageOf(err) }
          }
          if (field.mapKind === 'message') {
            const found = messageValueReason(field, entry, at, depth, false)
            if (found !== undefined) return found
          }
        }
        return undefined
      }
      default:
        return undefined
    }
  }

  return messageReason
}

/**
 * @param {string} path
 * @param {string | undefined} reason
 */
function reasonAt(path, reason) {
  return reason === undefined ? undefined : { path, reason }
}

/**
 * Whether `value` is an object made by `{}` (or with no prototype).
 * @param {unknown} value
 * @returns {value is Record<string, unknown>}
 */
function isPlainObject(value) {
  if (typeof value !== 'object' || value === null) return false
  const prototype = Object.getPrototypeOf(value)
  return prototype === Object.prototype || prototype === null
}

/**
 * @param {any} schema a protobuf-es v2 message schema
 * @returns {Codec}
 */
function protobufCodec(schema) {
  if (!isMessageSchema(schema)) {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `invalid configuration: schema must be a protobuf-es v2 message schema (a GenMessage generated by protoc-gen-es, e.g. OrderSchema), got ${describe(schema)}`)
  }
  const protobuf = optional('@bufbuild/protobuf', 'schema')
  const invalidField = fieldChecker(protobuf, optional('@bufbuild/protobuf/reflect', 'schema'), optional('@bufbuild/protobuf/wkt', 'schema'))
  /** @type {string} */
  const typeName = schema.typeName
  return {
    kind: 'protobuf',
    contentType: `${CONTENT_TYPES.protobuf}; messageType=${typeName}`,
    encode(data, what) {
      if (typeof data !== 'object' || data === null || Array.isArray(data) || data instanceof Uint8Array) {
        throw new ProtoqueueError('ERR_PQ_SERIALIZE', `${what} must be a ${typeName} message or its init object, got ${describe(data)}`)
      }
      /** @type {any} */
      const given = data
      if (given.$typeName !== undefined && given.$typeName !== typeName) {
        throw new ProtoqueueError('ERR_PQ_SERIALIZE', `${what} is a ${String(given.$typeName)} message; this queue's schema is ${typeName}`)
      }
      let invalid
      try {
        invalid = invalidField(schema, given, what, 0)
      } catch (err) {
        // A getter or Proxy trap of the data threw (as JSON.stringify would have).
        throw new ProtoqueueError('ERR_PQ_SERIALIZE', `${what} could not be read: ${messageOf(err)}`, { cause: err })
      }
      if (invalid !== undefined) {
        throw new ProtoqueueError('ERR_PQ_SERIALIZE', `${invalid.path} cannot be encoded as ${typeName}: ${invalid.reason}`)
      }
      try {
        const message = protobuf.isMessage(given, schema) ? given : protobuf.create(schema, given)
        return ownBuffer(protobuf.toBinary(schema, message))
      } catch (err) {
        throw new ProtoqueueError('ERR_PQ_SERIALIZE', `${what} cannot be encoded as ${typeName}: ${messageOf(err)}`, { cause: err })
      }
    },
    decode(bytes, contentType) {
      const named = parameter(contentType, 'messageType')
      if (named !== undefined && named !== typeName) {
        throw new Error(`its message type is ${named}; this worker's schema is ${typeName}`)
      }
      try {
        return protobuf.fromBinary(schema, bytes)
      } catch (err) {
        throw new Error(`it does not decode as ${typeName}: ${messageOf(err)}`)
      }
    },
    // A JSON task (from a producer without the schema) in the Protobuf JSON mapping: the handler
    // still gets a message.
    fromJson(data) {
      try {
        return protobuf.fromJson(schema, /** @type {any} */ (data), { ignoreUnknownFields: true })
      } catch (err) {
        throw new Error(`its JSON data is not a ${typeName} in the Protobuf JSON mapping: ${messageOf(err)}`)
      }
    },
  }
}

/**
 * Whether `value` is a Promise or another thenable (reading `then` may throw: then it is not).
 * @param {unknown} value
 */
function isThenable(value) {
  try {
    return (typeof value === 'object' || typeof value === 'function') && value !== null && typeof (/** @type {any} */ (value).then) === 'function'
  } catch {
    return false
  }
}

/**
 * Lets go of a Promise a serializer returned: its rejection, if it rejects, is not reported as
 * unhandled (which would end a Node process).
 * @param {unknown} thenable
 */
function letGo(thenable) {
  try {
    Promise.resolve(thenable).catch(() => {})
  } catch {
    // Nothing can be done about a thenable that cannot be followed.
  }
}

/**
 * Whether `fn` is an `async function` (or an async generator function): what it returns is a
 * Promise (or an async iterator), never data or bytes.
 * @param {Function} fn
 */
function isAsyncFunction(fn) {
  const tag = Object.prototype.toString.call(fn)
  return tag === '[object AsyncFunction]' || tag === '[object AsyncGeneratorFunction]'
}

/**
 * @param {any} serializer `{ contentType, encode, decode }`
 * @returns {Codec}
 */
function customCodec(serializer) {
  const { contentType, encode, decode } = serializer
  if (typeof encode !== 'function' || typeof decode !== 'function') {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', 'invalid configuration: serializer must be \'json\', \'raw\', \'msgpack\' or an object with encode(data) and decode(bytes, contentType) functions')
  }
  for (const [name, fn] of /** @type {const} */ ([['encode', encode], ['decode', decode]])) {
    if (isAsyncFunction(fn)) {
      throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `invalid configuration: serializer.${name} is an async function; it must return its result synchronously (a ${name === 'encode' ? 'Uint8Array' : 'value'}, not a Promise)`)
    }
  }
  if (typeof contentType !== 'string' || !/^[!-~]+\/[!-~]+(\s*;[ -~]*)?$/.test(contentType) || contentType.length > 256) {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `invalid configuration: serializer.contentType must be a content type like 'application/x-mine' (printable ASCII, at most 256 bytes), got ${describe(contentType)}`)
  }
  if (essence(contentType) === 'application/json') {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', 'invalid configuration: serializer.contentType application/json is the built-in JSON serializer\'s; give another content type')
  }
  return {
    kind: 'custom',
    contentType,
    encode(data, what) {
      let bytes
      try {
        bytes = encode.call(serializer, data)
      } catch (err) {
        throw new ProtoqueueError('ERR_PQ_SERIALIZE', `${what} could not be encoded: serializer.encode threw ${messageOf(err)}`, { cause: err })
      }
      if (!(bytes instanceof Uint8Array)) {
        if (isThenable(bytes)) {
          letGo(bytes)
          throw new ProtoqueueError('ERR_PQ_SERIALIZE', `${what} could not be encoded: serializer.encode returned a Promise (or another thenable); it must return a Uint8Array synchronously`)
        }
        throw new ProtoqueueError('ERR_PQ_SERIALIZE', `serializer.encode must return a Uint8Array (or Buffer), got ${describe(bytes)}`)
      }
      return ownBuffer(bytes)
    },
    decode(bytes, type) {
      const data = decode.call(serializer, bytes, type)
      // Awaiting it would make every decode asynchronous (the dispatcher starts a handler in the
      // same call that decodes its task; getDeadLetters and getSchedules decode as they read):
      // a Promise is refused instead, so the handler never gets one as its data.
      if (isThenable(data)) {
        letGo(data)
        throw new Error('serializer.decode returned a Promise (or another thenable); it must return the data synchronously')
      }
      return data
    },
    fromJson: undefined,
  }
}

/**
 * The codec of a configuration's `serializer` and `schema`, or `undefined` for JSON (the
 * default). Throws a ProtoqueueError (`ERR_PQ_INVALID_CONFIG`) for a bad one.
 * @param {unknown} serializer
 * @param {unknown} schema
 * @returns {Codec | undefined}
 */
function codecOf(serializer, schema) {
  if (schema !== undefined && schema !== null) {
    if (serializer !== undefined && serializer !== null) {
      throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', 'invalid configuration: give serializer or schema (which means Protobuf), not both')
    }
    return protobufCodec(schema)
  }
  if (serializer === undefined || serializer === null || serializer === 'json') return undefined
  if (serializer === 'raw') return rawCodec()
  if (serializer === 'msgpack') return msgpackCodec()
  if (typeof serializer === 'object' && !Array.isArray(serializer)) return customCodec(serializer)
  throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `invalid configuration: serializer must be 'json', 'raw', 'msgpack' or { contentType, encode, decode }, got ${describe(serializer)}`)
}

/**
 * Decodes the data of a task as the native side handed it (`data` base64 with `contentType`,
 * or JSON already parsed) in place, for the handler. Throws, saying why, when it cannot be: the
 * task is then dead-lettered as `invalidData`.
 * @param {Codec} codec
 * @param {any} task
 */
function decodeTask(codec, task) {
  const contentType = task.contentType
  if (contentType === undefined) {
    if (codec.fromJson === undefined) return
    try {
      task.data = codec.fromJson(task.data)
    } catch (err) {
      throw new Error(`task ${task.id}: ${messageOf(err)}`)
    }
    return
  }
  let data
  try {
    data = codec.decode(Buffer.from(task.data, 'base64'), contentType)
  } catch (err) {
    throw new Error(`task ${task.id} has data of content type ${contentType} that this worker cannot decode: ${messageOf(err)}`)
  }
  task.data = data
}

/**
 * Whether a dead letter's data of `contentType` is for `codec` to decode.
 * @param {Codec | undefined} codec
 * @param {string} contentType
 */
function decodes(codec, contentType) {
  return codec !== undefined && essence(contentType) === essence(codec.contentType)
}

module.exports = { codecOf, decodeTask, decodes, essence, CONTENT_TYPES }
