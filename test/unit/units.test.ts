import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseDuration, parseSize } from '../../src/config/units.ts';

describe('sizes', () => {
  const cases: Array<[string | number, number]> = [
    ['20GiB', 20 * 1024 ** 3],
    ['512MiB', 512 * 1024 ** 2],
    ['1.5KiB', 1536],
    ['10MB', 10_000_000],
    ['1tb', 1e12],
    ['100', 100],
    [4096, 4096],
    [' 2 GiB ', 2 * 1024 ** 3],
  ];
  for (const [input, bytes] of cases) it(`${JSON.stringify(input)} is ${bytes} bytes`, () => assert.equal(parseSize(input), bytes));
  for (const bad of ['', 'lots', '1XB', '-1', 'GiB', -5]) {
    it(`refuses ${JSON.stringify(bad)}`, () => assert.throws(() => parseSize(bad), /invalid size/));
  }
});

describe('durations', () => {
  const cases: Array<[string | number, number]> = [
    ['5m', 300_000],
    ['30s', 30_000],
    ['250ms', 250],
    ['1h30m', 5_400_000],
    ['2d', 172_800_000],
    ['10', 10_000],
    [1.5, 1500],
  ];
  for (const [input, ms] of cases) it(`${JSON.stringify(input)} is ${ms} ms`, () => assert.equal(parseDuration(input), ms));
  for (const bad of ['', '5 minutes', 'm', '5m3', '1y', -1]) {
    it(`refuses ${JSON.stringify(bad)}`, () => assert.throws(() => parseDuration(bad), /invalid duration/));
  }
});
