/**
 * flask-asyncstate: types of the widget's ES module, asyncstate.mjs (hand-written).
 *
 *   import { Tracker, Widget } from '/asyncstate/asyncstate.mjs';
 *
 * Map that URL to this file in your tsconfig (`paths`), or copy it next to your import.
 */

/** The statuses of a job (the server's JobStatus). */
export type JobStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'lost';

/** A progress document, as GET <prefix>/progress/<token> answers it. */
export interface ProgressDocument {
  id: string;
  name: string;
  label?: string | null;
  status: JobStatus;
  current: number;
  total: number | null;
  percent: number | null;
  message: string | null;
  result: unknown;
  error: { type: string; message: string } | null;
  cancel_requested: boolean;
  created_at: number;
  updated_at: number;
  started_at: number | null;
  rate: number | null;
  eta: number | null;
  reason: 'user' | 'shutdown' | 'timeout' | 'lost' | 'error' | 'forced' | string | null;
  attempt?: number;
  max_attempts?: number;
  retry_at?: number | null;
  resumed?: boolean;
  /** A parent's counts of its children (job.spawn); null for other jobs. */
  children?: ChildCounts | null;
  /** The name of the stage running now (job.stage), or null. */
  stage?: string | null;
  /** The job's stages, in the order begun; null if it has none. */
  stages?: Stage[] | null;
  /** The last 20 lines of the job's trail (job.log); null if none. */
  log?: LogLine[] | null;
  [field: string]: unknown;
}

export interface ChildCounts {
  total: number;
  queued: number;
  running: number;
  succeeded: number;
  failed: number;
  cancelled: number;
  lost: number;
}

export interface Stage {
  name: string;
  status: 'running' | 'done' | 'failed' | 'cancelled';
  started_at: number;
  ended_at: number | null;
}

export interface LogLine {
  /** Seconds since the epoch. */
  at: number;
  /** Text (never HTML). */
  text: string;
}

/** What an `error` event carries: a failed request. */
export interface ErrorInfo {
  kind: 'progress' | 'cancel' | 'retry' | 'result' | 'config';
  /** The HTTP status; 0 for a network error or a timeout. */
  status: number;
  textStatus?: string;
  /** The server's `error` when there is one. */
  message: string;
  /** Tried again later (network, 408, 429, 5xx): never the end of the job. */
  transient: boolean;
  /** Transient: the failures in a row, or the number of the cancel's try. */
  attempt?: number;
  /** Transient: ms until the next try; null when there is none. */
  retryIn?: number | null;
}

export interface Options {
  token?: string | null;
  /** A path on this site ("/asyncstate"); anything else gets the widget refused. */
  prefix?: string;
  /** ms between polls (1000). */
  interval?: number;
  /** Cap of the back-off, ms (30000). */
  maxInterval?: number;
  /** Cap of a server's Retry-After, ms (60000); at least 1000 is waited. */
  maxRetryAfter?: number;
  /** How often a cancel that failed transiently is sent again (5; 0: never). */
  cancelRetries?: number;
  /** ms before a request counts as failed (20000). */
  timeout?: number;
  /** "poll", or "auto": the event stream, falling back to polling. */
  mode?: 'poll' | 'auto' | 'sse';
  /** "Try again" once the job ended failed, cancelled or lost (true). */
  tryAgain?: boolean | string;
  /** The CSRF token of POSTs; default: <meta name="csrf-token">. */
  csrfToken?: string | ((this: Element | undefined) => string | null) | null;
  csrfHeader?: string;
  /** Widget: the bar's aria-label (default: the progress label). */
  label?: string | null;
  /** Widget: labels to change, by key (templating.DEFAULT_LABELS), or layers of them. */
  labels?: Labels | Array<Labels | string | null | undefined> | string;
  /** Widget: the progress in the page title while the tab is hidden (true). */
  pageTitle?: boolean | string;
  /** Widget: a notification at the end, if the user allowed them (false). */
  notify?: boolean | string;
  /** Widget: the job has a result slot to fetch when it succeeds (false). */
  result?: boolean | string;
  /** Widget: the names of the job's stages (or their JSON), to list the ones to come. */
  steps?: string[] | string | null;
}

export type Labels = Record<string, string>;

export interface TrackerEvents {
  /** "sse" or "poll": started, or switched. */
  transport: CustomEvent<'sse' | 'poll'>;
  /** A progress document arrived. */
  progress: CustomEvent<ProgressDocument>;
  /** A final status arrived (once per run). */
  done: CustomEvent<ProgressDocument>;
  /** A request failed. */
  error: CustomEvent<ErrorInfo>;
  /** The state changed: something to draw. */
  change: CustomEvent<undefined>;
  destroy: CustomEvent<undefined>;
  /** Widget, with `result`: the result slot was filled (its HTML). */
  result: CustomEvent<string>;
}

/** Follows one job by its token; fires its events on itself. */
export class Tracker extends EventTarget {
  constructor(token: string | null | undefined, options?: Options);
  readonly options: Required<Options>;
  readonly token: string;
  /** The checked prefix, or null: refused (it does nothing at all). */
  readonly prefix: string | null;
  readonly refused: boolean;
  /** The last progress document. */
  readonly doc: ProgressDocument | null;
  /** Its status, or "notfound", "forbidden", "error" once halted. */
  readonly status: JobStatus | 'notfound' | 'forbidden' | 'error' | null;
  /** Stopped by an error of its own (404, 403, ...). */
  readonly halt: { modifier: string; label?: string; detail: string } | null;
  /** A final status or a halt. */
  readonly finished: boolean;
  readonly destroyed: boolean;
  readonly transport: 'sse' | 'poll' | null;
  /** A stream failed before it opened: it polls from then on. */
  readonly sseRefused: boolean;
  /** The server answered 503 or 429 (or sent "unavailable"). */
  readonly reconnecting: boolean;
  /** ms until the next poll after another transient failure. */
  readonly retryIn: number | null;
  /** Transient failures in a row. */
  readonly failures: number;
  /** A document before the final one was seen. */
  readonly sawUnfinished: boolean;
  readonly cancelPending: boolean;
  readonly cancelRequested: boolean;
  readonly cancelError: { retrying?: boolean; message?: string } | null;
  readonly retryPending: boolean;
  readonly retryError: { message: string } | null;

  /** Follow the job: its event stream (mode "auto") or polls. */
  start(): void;
  /** Poll now (while polling). */
  refresh(): void;
  poll(): Promise<void>;
  cancel(): void;
  /** Whether "Try again" is offered: the job ended failed, cancelled or lost. */
  retryOffered(): boolean;
  /** "Try again": POST <prefix>/retry/<token>, then follow the new run. */
  retry(): Promise<void>;
  /** Stop following the job. */
  destroy(): void;

  addEventListener<K extends keyof TrackerEvents>(
    type: K,
    listener: (event: TrackerEvents[K]) => void,
    options?: boolean | AddEventListenerOptions
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions
  ): void;
}

/** A Tracker drawn on an element: the server's markup, the parts it lacks made. */
export class Widget extends Tracker {
  constructor(element: HTMLElement, options?: Options);
  readonly element: HTMLElement;
  readonly labels: Labels;
  /** The parts; children (the totals), stages and trail once the document has them. */
  readonly parts: Record<
    'bar' | 'fill' | 'eta' | 'message' | 'result' | 'status' | 'cancel' | 'retry',
    HTMLElement | null
  > &
    Partial<Record<'children' | 'stages' | 'trail', HTMLElement | null>>;
  /** The percentage the bar shows (null: unknown). */
  readonly shown: number | null;
  label(key: string): string;
  finalLabel(doc: ProgressDocument): string;
  statusText(doc: ProgressDocument, isFinal: boolean): string;
  render(): void;
}

/** <asyncstate-progress token="..."> a Widget on itself; its events as "asyncstate:<name>". */
export class ProgressElement extends HTMLElement {
  readonly widget: Widget | null;
}

/** What every Widget starts with: page title, notification, result slot. */
export const addOns: Array<(widget: Widget) => void>;
/** Every widget's options unless given others: change them for the whole page. */
export const defaults: Required<Options> & { labels: Labels };
/** The server's default labels. */
export const labels: Readonly<Labels>;
/** The job statuses, from the server. */
export const statuses: Readonly<{ all: JobStatus[]; final: JobStatus[] }>;

declare global {
  interface HTMLElementTagNameMap {
    'asyncstate-progress': ProgressElement;
  }
  interface HTMLElementEventMap {
    'asyncstate:transport': CustomEvent<'sse' | 'poll'>;
    'asyncstate:progress': CustomEvent<ProgressDocument>;
    'asyncstate:done': CustomEvent<ProgressDocument>;
    'asyncstate:error': CustomEvent<ErrorInfo>;
    'asyncstate:result': CustomEvent<string>;
  }
}
