// The helpers that name values in messages (lib/describe.js): they never throw, whatever they are
// given, so a message about a bad value never becomes a second error. No NATS here.
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { describe, keyPath, messageOf, NO_MESSAGE, textOf } from '../lib/describe.js'

/** Values with no string form, each in its own way. */
function hostile(): unknown[] {
  const { proxy, revoke } = Proxy.revocable({}, {})
  revoke()
  const throwing = new Proxy({}, { get() { throw new Error('trap') }, getPrototypeOf() { throw new Error('trap') } })
  return [Object.create(null), { toString() { throw new Error('no') } }, throwing, proxy]
}

test('describe names a value by its kind, and a primitive by its type and text, cut short', () => {
  assert.equal(describe(null), 'null')
  assert.equal(describe([1]), 'an array')
  assert.equal(describe({}), 'an object')
  assert.equal(describe(() => {}), 'a function')
  assert.equal(describe(undefined), 'undefined undefined')
  assert.equal(describe(1.5), 'number 1.5')
  assert.equal(describe(Symbol('s')), 'symbol Symbol(s)')
  assert.equal(describe('x'.repeat(1000)), `string ${'x'.repeat(53)}`)
  for (const value of hostile()) assert.equal(typeof describe(value), 'string')
})

test('messageOf gives an Error its message, any other value its string form, and never throws', () => {
  assert.equal(messageOf(new TypeError('bad')), 'bad')
  assert.equal(messageOf('plain'), 'plain')
  assert.equal(messageOf(42), '42')
  assert.equal(messageOf(Object.create(null)), NO_MESSAGE)
  for (const value of hostile()) assert.equal(typeof messageOf(value), 'string')
})

test('textOf is a value as text, or undefined when it has none', () => {
  assert.equal(textOf('a'), 'a')
  assert.equal(textOf(1), '1')
  for (const value of hostile()) assert.equal(textOf(value), undefined)
})

test('keyPath writes an object key as a path step', () => {
  assert.equal(keyPath('name'), '.name')
  assert.equal(keyPath('$a_1'), '.$a_1')
  assert.equal(keyPath('odd key'), '["odd key"]')
  assert.equal(keyPath('1st'), '["1st"]')
})
