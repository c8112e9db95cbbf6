"use client";

// The session (bearer token) and the language, shared through React Context. The token is the only thing
// this app keeps in the browser's storage; logging out drops it.
import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from "react";
import { dictionaries, type Key, type Lang } from "./i18n";

const TOKEN = "autotrade.session";
const LANG = "autotrade.lang";

type Claims = { sub: string; role: string; exp: number };

type Session = {
  ready: boolean;
  token: string | null;
  claims: Claims | null;
  login: (token: string) => void;
  logout: () => void;
  lang: Lang;
  setLang: (lang: Lang) => void;
  t: (key: Key) => string;
};

const SessionContext = createContext<Session | null>(null);

function decode(token: string): Claims | null {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part)) as Claims;
    return claims.exp * 1000 > Date.now() ? claims : null;
  } catch {
    return null;
  }
}

export function SessionProvider({ children }: { children: ReactNode }) {
  const [token, setToken] = useState<string | null>(null);
  const [lang, setLangState] = useState<Lang>("ko");
  const [ready, setReady] = useState(false);

  useEffect(() => {
    const saved = window.localStorage.getItem(TOKEN);
    if (saved && decode(saved)) setToken(saved);
    else window.localStorage.removeItem(TOKEN);
    const l = window.localStorage.getItem(LANG);
    if (l === "en" || l === "ko") setLangState(l);
    setReady(true);
  }, []);

  useEffect(() => {
    document.documentElement.lang = lang;
  }, [lang]);

  const login = useCallback((t: string) => {
    window.localStorage.setItem(TOKEN, t);
    setToken(t);
  }, []);
  const logout = useCallback(() => {
    window.localStorage.removeItem(TOKEN);
    setToken(null);
  }, []);
  const setLang = useCallback((l: Lang) => {
    window.localStorage.setItem(LANG, l);
    setLangState(l);
  }, []);

  const value = useMemo<Session>(
    () => ({
      ready,
      token,
      claims: token ? decode(token) : null,
      login,
      logout,
      lang,
      setLang,
      t: (key: Key) => dictionaries[lang][key],
    }),
    [ready, token, login, logout, lang, setLang],
  );
  return <SessionContext.Provider value={value}>{children}</SessionContext.Provider>;
}

export function useSession(): Session {
  const s = useContext(SessionContext);
  if (!s) throw new Error("useSession outside SessionProvider");
  return s;
}

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
  ) {
    super(message);
  }
}

/** A call to the documented API; a 401 ends the session. */
export async function api<T>(
  path: string,
  opts: { token?: string | null; method?: string; body?: unknown; onUnauthorized?: () => void } = {},
): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
  const r = await fetch(path, {
    method: opts.method ?? (opts.body !== undefined ? "POST" : "GET"),
    headers,
    body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
  });
  if (r.status === 401 && opts.token && opts.onUnauthorized) opts.onUnauthorized();
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const d = (data as { detail?: unknown }).detail;
    const msg = typeof d === "string" ? d : Array.isArray(d) ? d.map((e) => e.msg).join("; ") : r.statusText;
    throw new ApiError(r.status, msg);
  }
  return data as T;
}
