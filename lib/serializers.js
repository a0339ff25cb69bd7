// @ts-check
'use strict'
// Serializers: how a queue encodes task data that is not JSON. JSON (the default) never comes
// here: index.js passes it to the native side as JSON text, as it always did. A queue with
// `serializer` or `schema` encodes every task with that serializer and labels it with its
// content type; its workers decode the tasks of that content type (and JSON tasks, so producers of
// both kinds can share a queue during a migration). Tasks of any other content type never reach
// the handler: the native side dead-letters them as `invalidData`, naming the content type.

/** A failure to report with a `ProtoqueueError` code; index.js turns it into one. */
class CodedError extends Error {
  /**
   * @param {'ERR_PQ_INVALID_CONFIG' | 'ERR_PQ_SERIALIZE'} code
   * @param {string} message
   * @param {unknown} [cause]
   */
  constructor(code, message, cause) {
    super(message, cause === undefined ? undefined : { cause })
    this.code = code
  }
}

/**
 * How one queue encodes and decodes task data.
 * @typedef {object} Codec
 * @property {string} kind `raw`, `msgpack`, `protobuf` or `custom`
 * @property {string} contentType what every task this queue enqueues is labelled with
 * @property {(data: unknown, what: string) => Buffer} encode the data's bytes, or a CodedError
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
 * A short description of a value, for error messages; never throws.
 * @param {unknown} value
 */
function describe(value) {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'object') return 'an object'
  if (typeof value === 'function') return 'a function'
  try {
    return `${typeof value} ${String(value)}`.slice(0, 60)
  } catch {
    return typeof value
  }
}

/** @param {unknown} err */
function messageOf(err) {
  try {
    return err instanceof Error ? err.message : String(err)
  } catch {
    return 'an error with no string form'
  }
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
    throw new CodedError('ERR_PQ_INVALID_CONFIG', `invalid configuration: ${what} needs the package ${name}; install it (npm install ${name})`, err)
  }
}

/** @returns {Codec} */
function rawCodec() {
  return {
    kind: 'raw',
    contentType: CONTENT_TYPES.raw,
    encode(data, what) {
      if (!(data instanceof Uint8Array)) {
        throw new CodedError('ERR_PQ_SERIALIZE', `${what} must be a Buffer or Uint8Array with serializer 'raw', got ${describe(data)}`)
      }
      return ownBuffer(data)
    },
    decode: (bytes) => bytes,
    fromJson: undefined,
  }
}

/** @returns {Codec} */
function msgpackCodec() {
  const { Packr } = optional('msgpackr', "serializer 'msgpack'")
  // Plain MessagePack (no msgpackr record extension), so other languages' libraries read it.
  const packr = new Packr({ useRecords: false, moreTypes: false })
  return {
    kind: 'msgpack',
    contentType: CONTENT_TYPES.msgpack,
    encode(data, what) {
      if (data === undefined || typeof data === 'function' || typeof data === 'symbol') {
        throw new CodedError('ERR_PQ_SERIALIZE', `${what} cannot be encoded as MessagePack (got ${describe(data)})`)
      }
      try {
        return ownBuffer(packr.pack(data))
      } catch (err) {
        throw new CodedError('ERR_PQ_SERIALIZE', `${what} cannot be encoded as MessagePack: ${messageOf(err)}`, err)
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

/**
 * The first key of an init object (or, below it, of its message fields) that is not a field of
 * its message: protobuf-es's `create` would silently drop it.
 * @param {any} schema
 * @param {any} init
 * @param {string} path
 * @param {number} depth
 * @returns {string | undefined}
 */
function unknownKey(schema, init, path, depth = 0) {
  if (depth > 100 || typeof init !== 'object' || init === null || Array.isArray(init) || init instanceof Uint8Array) return undefined
  if (init.$typeName !== undefined) return undefined
  /** @type {Map<string, any>} */
  const fields = new Map()
  for (const field of schema.fields) if (field.oneof === undefined) fields.set(field.localName, field)
  for (const oneof of schema.oneofs ?? []) fields.set(oneof.localName, oneof)
  for (const key of Object.keys(init)) {
    if (key === '$typeName' || key === '$unknown') continue
    const field = fields.get(key)
    if (field === undefined) return `${path}.${key}`
    const value = init[key]
    if (field.fieldKind === 'message' && field.message) {
      const found = unknownKey(field.message, value, `${path}.${key}`, depth + 1)
      if (found !== undefined) return found
    } else if (field.fieldKind === 'list' && field.listKind === 'message' && Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        const found = unknownKey(field.message, value[i], `${path}.${key}[${i}]`, depth + 1)
        if (found !== undefined) return found
      }
    }
  }
  return undefined
}

/**
 * @param {any} schema a protobuf-es v2 message schema
 * @returns {Codec}
 */
function protobufCodec(schema) {
  if (!isMessageSchema(schema)) {
    throw new CodedError('ERR_PQ_INVALID_CONFIG', `invalid configuration: schema must be a protobuf-es v2 message schema (a GenMessage generated by protoc-gen-es, e.g. OrderSchema), got ${describe(schema)}`)
  }
  const protobuf = optional('@bufbuild/protobuf', 'schema')
  /** @type {string} */
  const typeName = schema.typeName
  return {
    kind: 'protobuf',
    contentType: `${CONTENT_TYPES.protobuf}; messageType=${typeName}`,
    encode(data, what) {
      if (typeof data !== 'object' || data === null || Array.isArray(data) || data instanceof Uint8Array) {
        throw new CodedError('ERR_PQ_SERIALIZE', `${what} must be a ${typeName} message or its init object, got ${describe(data)}`)
      }
      /** @type {any} */
      const given = data
      if (given.$typeName !== undefined && given.$typeName !== typeName) {
        throw new CodedError('ERR_PQ_SERIALIZE', `${what} is a ${String(given.$typeName)} message; this queue's schema is ${typeName}`)
      }
      const unknown = unknownKey(schema, given, what)
      if (unknown !== undefined) {
        throw new CodedError('ERR_PQ_SERIALIZE', `${unknown} is not a field of ${typeName} (or of its nested message)`)
      }
      try {
        const message = protobuf.isMessage(given, schema) ? given : protobuf.create(schema, given)
        return ownBuffer(protobuf.toBinary(schema, message))
      } catch (err) {
        throw new CodedError('ERR_PQ_SERIALIZE', `${what} cannot be encoded as ${typeName}: ${messageOf(err)}`, err)
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
 * @param {any} serializer `{ contentType, encode, decode }`
 * @returns {Codec}
 */
function customCodec(serializer) {
  const { contentType, encode, decode } = serializer
  if (typeof encode !== 'function' || typeof decode !== 'function') {
    throw new CodedError('ERR_PQ_INVALID_CONFIG', 'invalid configuration: serializer must be \'json\', \'raw\', \'msgpack\' or an object with encode(data) and decode(bytes, contentType) functions')
  }
  if (typeof contentType !== 'string' || !/^[!-~]+\/[!-~]+(\s*;[ -~]*)?$/.test(contentType) || contentType.length > 256) {
    throw new CodedError('ERR_PQ_INVALID_CONFIG', `invalid configuration: serializer.contentType must be a content type like 'application/x-mine' (printable ASCII, at most 256 bytes), got ${describe(contentType)}`)
  }
  if (essence(contentType) === 'application/json') {
    throw new CodedError('ERR_PQ_INVALID_CONFIG', 'invalid configuration: serializer.contentType application/json is the built-in JSON serializer\'s; give another content type')
  }
  return {
    kind: 'custom',
    contentType,
    encode(data, what) {
      let bytes
      try {
        bytes = encode.call(serializer, data)
      } catch (err) {
        throw new CodedError('ERR_PQ_SERIALIZE', `${what} could not be encoded: serializer.encode threw ${messageOf(err)}`, err)
      }
      if (!(bytes instanceof Uint8Array)) {
        throw new CodedError('ERR_PQ_SERIALIZE', `serializer.encode must return a Uint8Array (or Buffer), got ${describe(bytes)}`)
      }
      return ownBuffer(bytes)
    },
    decode: (bytes, type) => decode.call(serializer, bytes, type),
    fromJson: undefined,
  }
}

/**
 * The codec of a configuration's `serializer` and `schema`, or `undefined` for JSON (the
 * default). Throws a CodedError (`ERR_PQ_INVALID_CONFIG`) for a bad one.
 * @param {unknown} serializer
 * @param {unknown} schema
 * @returns {Codec | undefined}
 */
function codecOf(serializer, schema) {
  if (schema !== undefined && schema !== null) {
    if (serializer !== undefined && serializer !== null) {
      throw new CodedError('ERR_PQ_INVALID_CONFIG', 'invalid configuration: give serializer or schema (which means Protobuf), not both')
    }
    return protobufCodec(schema)
  }
  if (serializer === undefined || serializer === null || serializer === 'json') return undefined
  if (serializer === 'raw') return rawCodec()
  if (serializer === 'msgpack') return msgpackCodec()
  if (typeof serializer === 'object' && !Array.isArray(serializer)) return customCodec(serializer)
  throw new CodedError('ERR_PQ_INVALID_CONFIG', `invalid configuration: serializer must be 'json', 'raw', 'msgpack' or { contentType, encode, decode }, got ${describe(serializer)}`)
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

module.exports = { CodedError, codecOf, decodeTask, decodes, essence, CONTENT_TYPES }
