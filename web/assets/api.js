// Talking to Lingr's HTTP API from the page: calls over XHR (fetch), observe over JSONP with
// dynamic <script> tags, as the original client did. Paths are relative to the page's host, so
// the page works from `lingr dev` and behind a load balancer that routes /api/room/observe to
// comet and /api/room/get_messages to history alike.

/** An API call that did not answer `ok`: `code` is the API's error code, or `network` and
 *  `timeout` when no answer came. */
export class ApiError extends Error {
  constructor(code, detail) {
    super(`${code}: ${detail}`);
    this.code = code;
    this.detail = detail;
  }
}

/** Calls `/api/<path>` with `params` as a JSON body; resolves with the answer. */
export function call(path, params) {
  return answerOf(fetch(`/api/${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(params),
  }));
}

/** `room/get_messages` over XHR (a GET: history serves it). */
export function messages(room, params) {
  return answerOf(fetch(`/api/room/get_messages?${new URLSearchParams({ room, ...params })}`));
}

/** The answer of a fetch of the API, or the ApiError it stands for. */
async function answerOf(fetching) {
  let response;
  try {
    response = await fetching;
  } catch {
    throw new ApiError('network', 'the server cannot be reached');
  }
  // Not JSON: a proxy's error page.
  const body = await response.json().catch(() => null);
  if (body && body.status === 'ok') return body;
  throw new ApiError(body?.code ?? `http_${response.status}`, body?.detail ?? response.statusText);
}

let callbacks = 0;
/** How long a callback outlives its call, for an answer that comes after the page gave up. */
const LATE_ANSWER_MS = 120_000;

/** Calls `/api/<path>` as JSONP: a <script> whose answer calls back a function of ours. A
 *  JSONP error still arrives as a body with `status: "error"` (a script cannot read an HTTP
 *  status); a script that fails to load or does not answer within `waitMs` is `network` or
 *  `timeout`. */
export function jsonp(path, params, waitMs) {
  return new Promise((resolve, reject) => {
    const name = `lingrJsonp${Date.now().toString(36)}_${callbacks++}`;
    const script = document.createElement('script');
    let timer = 0;
    const finish = () => {
      clearTimeout(timer);
      // A late answer after a timeout must find a function, and do nothing; then it goes.
      window[name] = () => {};
      setTimeout(() => { delete window[name]; }, LATE_ANSWER_MS);
      script.remove();
    };
    window[name] = (body) => {
      finish();
      if (body && body.status === 'ok') resolve(body);
      else reject(new ApiError(body?.code ?? 'bad_answer', body?.detail ?? 'an answer that is not Lingr\'s'));
    };
    script.onerror = () => {
      finish();
      reject(new ApiError('network', 'the server cannot be reached'));
    };
    timer = setTimeout(() => {
      finish();
      reject(new ApiError('timeout', 'no answer in time'));
    }, waitMs);
    script.src = `/api/${path}?${new URLSearchParams({ ...params, callback: name })}`;
    document.head.append(script);
  });
}
