"use client";

import { useCallback, useEffect, useState, type FormEvent } from "react";
import { Alert, button, Field, Shell } from "@/components/Shell";
import { formatKrw } from "@/lib/format";
import type { Key } from "@/lib/i18n";
import { api, useSession } from "@/lib/session";

const secondary =
  "rounded border border-slate-400 bg-white px-4 py-2 text-slate-800 hover:bg-slate-100 focus:outline-2 focus:outline-blue-700";
const danger =
  "rounded bg-red-700 px-4 py-2 font-medium text-white hover:bg-red-800 focus:outline-2 focus:outline-offset-2 focus:outline-red-700";

type AccountInfo = { account_no: string; account_name: string | null; balance: number };
type Account = {
  account_no: string;
  account_name: string | null;
  api_status: string;
  is_auto_trading_enabled: boolean;
  daily_limit: number;
};

export default function KeysPage() {
  const { token, logout, t } = useSession();
  const [accounts, setAccounts] = useState<Account[] | null>(null);
  const [answer, setAnswer] = useState<AccountInfo | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [notice, setNotice] = useState<string | null>(null);
  const [rotating, setRotating] = useState<string | null>(null);
  const [deleting, setDeleting] = useState<string | null>(null);
  const [prefs, setPrefs] = useState<{ channels: string[]; phone: string | null } | null>(null);
  const [prefsNote, setPrefsNote] = useState<string | null>(null);

  const load = useCallback(async () => {
    if (!token) return;
    try {
      setAccounts(await api<Account[]>("/api/user/accounts", { token, onUnauthorized: logout }));
    } catch (err) {
      setError(`${t("failed")}: ${(err as Error).message}`);
    }
  }, [token, logout, t]);

  useEffect(() => {
    void load();
  }, [load]);

  useEffect(() => {
    if (!token) return;
    api<{ channels: string[]; phone: string | null }>("/api/me/notifications", { token, onUnauthorized: logout })
      .then(setPrefs)
      .catch(() => setPrefs({ channels: ["console"], phone: null }));
  }, [token, logout]);

  async function savePrefs(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    setPrefsNote(null);
    try {
      const saved = await api<{ channels: string[]; phone: string | null }>("/api/me/notifications", {
        token,
        onUnauthorized: logout,
        method: "PUT",
        body: { channels: f.getAll("channel"), phone: f.get("phone") || null },
      });
      setPrefs(saved);
      setPrefsNote(t("saved"));
    } catch (err) {
      setPrefsNote(`${t("failed")}: ${(err as Error).message}`);
    }
  }

  async function submit(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const form = e.currentTarget;
    const f = new FormData(form);
    setBusy(true);
    setError(null);
    setAnswer(null);
    try {
      const r = await api<{ account_info: AccountInfo }>("/api/user/register-api", {
        token,
        onUnauthorized: logout,
        body: {
          app_key: f.get("app_key"),
          app_secret: f.get("app_secret"),
          account_no: f.get("account_no"),
          daily_limit: Number(f.get("daily_limit")),
        },
      });
      setAnswer(r.account_info);
      form.reset(); // the secret leaves the page as soon as the broker has answered
      await load();
    } catch (err) {
      setError(`${t("failed")}: ${(err as Error).message}`);
    } finally {
      setBusy(false);
    }
  }

  async function toggle(a: Account) {
    setError(null);
    try {
      await api("/api/user/auto-trading", {
        token,
        onUnauthorized: logout,
        body: { account_no: a.account_no, enabled: !a.is_auto_trading_enabled },
      });
      await load();
    } catch (err) {
      setError(`${t("failed")}: ${(err as Error).message}`);
    }
  }

  async function rotate(e: FormEvent<HTMLFormElement>, account: string) {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    setError(null);
    try {
      await api("/api/user/api-key/rotate", {
        token,
        onUnauthorized: logout,
        body: { account_no: account, app_key: f.get("new_app_key"), app_secret: f.get("new_app_secret") },
      });
      setRotating(null);
      setNotice(t("rotated"));
      await load();
    } catch (err) {
      setError(`${t("failed")}: ${(err as Error).message}`);
    }
  }

  async function remove(account: string) {
    setError(null);
    try {
      const r = await api<{ message: string }>(`/api/user/api-key/${account}`, {
        token,
        onUnauthorized: logout,
        method: "DELETE",
      });
      setDeleting(null);
      setNotice(r.message);
      await load();
    } catch (err) {
      setError(`${t("failed")}: ${(err as Error).message}`);
    }
  }

  return (
    <Shell>
      <h1 className="mb-4 text-2xl font-bold">{t("keysTitle")}</h1>
      <div className="grid gap-6 md:grid-cols-2">
        <section aria-labelledby="guide" className="rounded-lg bg-white p-5 shadow-sm">
          <h2 id="guide" className="mb-2 text-lg font-semibold">
            {t("keysGuideTitle")}
          </h2>
          <ol className="list-decimal space-y-1 pl-5 text-sm">
            <li>{t("keysGuide1")}</li>
            <li>{t("keysGuide2")}</li>
            <li>{t("keysGuide3")}</li>
            <li>{t("keysGuide4")}</li>
          </ol>
          <p className="mt-3 rounded bg-slate-100 p-3 text-sm">{t("keysSafety")}</p>
        </section>
        <form onSubmit={submit} className="flex flex-col gap-4 rounded-lg bg-white p-5 shadow-sm">
          <Field id="app_key" label={t("appKey")} autoComplete="off" minLength={8} required />
          <Field
            id="app_secret"
            label={t("appSecret")}
            type="password"
            autoComplete="off"
            minLength={8}
            required
          />
          <Field
            id="account_no"
            label={t("accountNo")}
            hint={t("accountNoHint")}
            inputMode="numeric"
            pattern="[0-9]{8,11}(-[0-9]{2})?"
            required
          />
          <Field
            id="daily_limit"
            label={t("dailyLimit")}
            type="number"
            min={1}
            step={1}
            defaultValue={5000000}
            required
          />
          {error && <Alert kind="error">{error}</Alert>}
          <button type="submit" className={button} disabled={busy}>
            {busy ? t("registering") : t("register")}
          </button>
        </form>
      </div>

      {notice && (
        <div className="mt-6">
          <Alert kind="ok">{notice}</Alert>
        </div>
      )}

      {answer && (
        <section
          aria-labelledby="answer"
          data-testid="broker-answer"
          className="mt-6 rounded-lg border border-green-300 bg-green-50 p-5"
        >
          <h2 id="answer" className="mb-2 text-lg font-semibold">
            {t("brokerAnswer")} — {t("registered")}
          </h2>
          <dl className="grid grid-cols-[auto_1fr] gap-x-4 gap-y-1 text-sm">
            <dt>{t("accountNo")}</dt>
            <dd className="num">{answer.account_no}</dd>
            <dt>{t("accountName")}</dt>
            <dd>{answer.account_name ?? "-"}</dd>
            <dt>{t("balance")}</dt>
            <dd className="num">{formatKrw(answer.balance)}</dd>
          </dl>
          <p className="mt-2 text-xs text-slate-700">{t("secretHidden")}</p>
        </section>
      )}

      {prefs && (
        <form
          onSubmit={savePrefs}
          aria-labelledby="notify"
          className="mt-6 flex flex-col gap-3 rounded-lg bg-white p-5 shadow-sm"
          data-testid="notifications"
        >
          <h2 id="notify" className="text-lg font-semibold">
            {t("notifyTitle")}
          </h2>
          <fieldset className="flex flex-wrap gap-4">
            <legend className="sr-only">{t("notifyTitle")}</legend>
            {["console", "kakao", "sns"].map((c) => (
              <label key={c} className="flex items-center gap-2">
                <input type="checkbox" name="channel" value={c} defaultChecked={prefs.channels.includes(c)} />
                {t(`ch_${c}` as Key)}
              </label>
            ))}
          </fieldset>
          <div className="max-w-xs">
            <Field id="phone" label={t("phone")} hint={t("phoneHint")} type="tel" defaultValue={prefs.phone ?? ""} />
          </div>
          <div className="flex items-center gap-3">
            <button type="submit" className={button}>
              {t("save")}
            </button>
            {prefsNote && (
              <span role="status" className="text-sm">
                {prefsNote}
              </span>
            )}
          </div>
        </form>
      )}

      <section aria-labelledby="accounts" className="mt-6">
        <h2 id="accounts" className="mb-2 text-lg font-semibold">
          {t("yourAccounts")}
        </h2>
        {accounts === null ? (
          <p>{t("loading")}</p>
        ) : accounts.length === 0 ? (
          <p>{t("noAccounts")}</p>
        ) : (
          <ul className="flex flex-col gap-3">
            {accounts.map((a) => (
              <li
                key={a.account_no}
                data-testid={`account-${a.account_no}`}
                className="flex flex-wrap items-center gap-x-6 gap-y-2 rounded-lg bg-white p-4 shadow-sm"
              >
                <span className="num font-medium">{a.account_no}</span>
                <span>{a.account_name ?? ""}</span>
                <span>
                  {t("status")}: <strong>{a.api_status}</strong>
                </span>
                <span className="num">
                  {t("dailyLimit")}: {formatKrw(a.daily_limit)}
                </span>
                <span>
                  {t("autoTrading")}:{" "}
                  <strong data-testid="auto-state">{a.is_auto_trading_enabled ? t("on") : t("off")}</strong>
                </span>
                {a.api_status !== "DELETED" && (
                  <span className="ml-auto flex flex-wrap gap-2">
                    {a.api_status === "ACTIVE" && (
                      <button type="button" className={button} onClick={() => toggle(a)}>
                        {a.is_auto_trading_enabled ? t("turnOff") : t("turnOn")}
                      </button>
                    )}
                    <button type="button" className={secondary} onClick={() => setRotating(a.account_no)}>
                      {t("rotate")}
                    </button>
                    <button type="button" className={danger} onClick={() => setDeleting(a.account_no)}>
                      {t("deleteKey")}
                    </button>
                  </span>
                )}
                {a.api_status === "DISABLED" && (
                  <p className="w-full rounded border border-amber-300 bg-amber-50 p-3 text-sm text-amber-950">
                    {t("disabledHelp")}
                  </p>
                )}
                {rotating === a.account_no && (
                  <form onSubmit={(e) => rotate(e, a.account_no)} className="flex w-full flex-col gap-3 sm:flex-row sm:items-end">
                    <Field id="new_app_key" label={t("appKey")} autoComplete="off" minLength={8} required />
                    <Field id="new_app_secret" label={t("appSecret")} type="password" autoComplete="off" minLength={8} required />
                    <button type="submit" className={button}>{t("rotateSubmit")}</button>
                    <button type="button" className={secondary} onClick={() => setRotating(null)}>{t("cancel")}</button>
                  </form>
                )}
                {deleting === a.account_no && (
                  <div role="alertdialog" aria-labelledby={`del-${a.account_no}`} className="w-full rounded border border-red-300 bg-red-50 p-3">
                    <p id={`del-${a.account_no}`} className="mb-2 text-sm text-red-900">{t("deleteConfirm")}</p>
                    <span className="flex gap-2">
                      <button type="button" className={danger} onClick={() => remove(a.account_no)}>{t("deleteYes")}</button>
                      <button type="button" className={secondary} onClick={() => setDeleting(null)} autoFocus>{t("cancel")}</button>
                    </span>
                  </div>
                )}
              </li>
            ))}
          </ul>
        )}
      </section>
    </Shell>
  );
}
