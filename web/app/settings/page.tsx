"use client";

import { useRouter } from "next/navigation";
import { useCallback, useEffect, useState, type FormEvent } from "react";
import { Alert, button, Field, Shell } from "@/components/Shell";
import { formatKrw } from "@/lib/format";
import { api, ApiError, useSession } from "@/lib/session";

type Account = { account_no: string; account_name: string | null; api_status: string; daily_limit: number };

const MIN_PASSWORD = 10; // the API's own rule (PasswordChangeRequest)
const MAX_LIMIT = 10_000_000_000; // the API's own rule (DailyLimitRequest)

export default function SettingsPage() {
  const { token, logout, t } = useSession();
  const router = useRouter();
  const [pwError, setPwError] = useState<{ field: string; text: string } | null>(null);
  const [pwBusy, setPwBusy] = useState(false);
  const [accounts, setAccounts] = useState<Account[] | null>(null);
  const [limitNote, setLimitNote] = useState<{ account: string; ok: boolean; text: string } | null>(null);

  const load = useCallback(async () => {
    if (!token) return;
    try {
      const all = await api<Account[]>("/api/user/accounts", { token, onUnauthorized: logout });
      setAccounts(all.filter((a) => a.api_status !== "DELETED"));
    } catch (err) {
      setLimitNote({ account: "", ok: false, text: `${t("failed")}: ${(err as Error).message}` });
    }
  }, [token, logout, t]);

  useEffect(() => {
    void load();
  }, [load]);

  async function changePassword(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    const current = String(f.get("current_password") ?? "");
    const next = String(f.get("new_password") ?? "");
    const again = String(f.get("new_password_again") ?? "");
    setPwError(null);
    if (!current) return setPwError({ field: "current_password", text: t("wrongCurrentPassword") });
    if (next.length < MIN_PASSWORD) return setPwError({ field: "new_password", text: t("weakPassword") });
    if (next !== again) return setPwError({ field: "new_password_again", text: t("passwordMismatch") });
    setPwBusy(true);
    try {
      // no onUnauthorized: a 401 here is most often the wrong current password, not an ended session
      await api("/api/auth/password", { token, body: { current_password: current, new_password: next } });
      // every session of this user has ended (the API bumps the session epoch): the login page drops the
      // token and says why (dropping it here would race the page's own redirect to the login page)
      router.replace("/login/?changed=1");
    } catch (err) {
      const status = err instanceof ApiError ? err.status : 0;
      if (status === 401 && err instanceof ApiError && err.message.includes("current password")) {
        setPwError({ field: "current_password", text: t("wrongCurrentPassword") });
      } else if (status === 401) {
        logout();
      } else if (status === 429) {
        setPwError({ field: "current_password", text: t("tooMany") });
      } else if (status === 422) {
        setPwError({ field: "new_password", text: t("weakPassword") });
      } else {
        setPwError({ field: "", text: `${t("failed")}: ${(err as Error).message}` });
      }
    } finally {
      setPwBusy(false);
    }
  }

  async function changeLimit(e: FormEvent<HTMLFormElement>, account: string) {
    e.preventDefault();
    const raw = String(new FormData(e.currentTarget).get("daily_limit") ?? "").trim();
    setLimitNote(null);
    if (!/^[0-9]+$/.test(raw) || Number(raw) < 1) {
      return setLimitNote({ account, ok: false, text: t("badLimit") });
    }
    if (Number(raw) > MAX_LIMIT) return setLimitNote({ account, ok: false, text: t("limitTooLarge") });
    try {
      const r = await api<{ daily_limit: number }>(`/api/user/api-key/${account}`, {
        token,
        onUnauthorized: logout,
        method: "PATCH",
        body: { daily_limit: Number(raw) },
      });
      setLimitNote({ account, ok: true, text: `${t("limitSaved")} ${formatKrw(r.daily_limit)}` });
      await load();
    } catch (err) {
      const status = err instanceof ApiError ? err.status : 0;
      setLimitNote({ account, ok: false, text: status === 422 ? t("badLimit") : `${t("failed")}: ${(err as Error).message}` });
    }
  }

  const invalid = (field: string) => (pwError?.field === field ? true : undefined);
  const describedBy = (field: string) => (pwError?.field === field ? "pw-error" : undefined);

  return (
    <Shell>
      <h1 className="mb-4 text-2xl font-bold">{t("settingsTitle")}</h1>
      <div className="grid gap-6 md:grid-cols-2">
        <form
          onSubmit={changePassword}
          noValidate
          aria-labelledby="pw-title"
          data-testid="password-form"
          className="flex flex-col gap-4 rounded-lg bg-white p-5 shadow-sm"
        >
          <h2 id="pw-title" className="text-lg font-semibold">
            {t("passwordTitle")}
          </h2>
          <Field
            id="current_password"
            label={t("currentPassword")}
            type="password"
            autoComplete="current-password"
            required
            aria-invalid={invalid("current_password")}
            aria-describedby={describedBy("current_password")}
          />
          <Field
            id="new_password"
            label={t("newPassword")}
            hint={t("passwordHint")}
            type="password"
            autoComplete="new-password"
            required
            minLength={MIN_PASSWORD}
            aria-invalid={invalid("new_password")}
            aria-describedby={describedBy("new_password") ? "new_password-hint pw-error" : "new_password-hint"}
          />
          <Field
            id="new_password_again"
            label={t("newPasswordConfirm")}
            type="password"
            autoComplete="new-password"
            required
            aria-invalid={invalid("new_password_again")}
            aria-describedby={describedBy("new_password_again")}
          />
          {pwError && (
            <div id="pw-error">
              <Alert kind="error">{pwError.text}</Alert>
            </div>
          )}
          <button type="submit" className={button} disabled={pwBusy}>
            {t("changePassword")}
          </button>
        </form>

        <section aria-labelledby="limits-title" className="rounded-lg bg-white p-5 shadow-sm" data-testid="limits">
          <h2 id="limits-title" className="mb-3 text-lg font-semibold">
            {t("limitsTitle")}
          </h2>
          {limitNote && limitNote.account === "" && <Alert kind="error">{limitNote.text}</Alert>}
          {accounts === null ? (
            <p>{t("loading")}</p>
          ) : accounts.length === 0 ? (
            <p>{t("needKey")}</p>
          ) : (
            <ul className="flex flex-col gap-4">
              {accounts.map((a) => {
                const id = `limit-${a.account_no}`;
                const note = limitNote?.account === a.account_no ? limitNote : null;
                return (
                  <li key={a.account_no} data-testid={`limit-${a.account_no}`} className="border-t pt-3 first:border-0 first:pt-0">
                    <p className="num mb-2 text-sm">
                      <span className="font-medium">{a.account_no}</span> {a.account_name ?? ""} ·{" "}
                      <span data-testid="current-limit">{formatKrw(a.daily_limit)}</span>
                    </p>
                    <form
                      onSubmit={(e) => changeLimit(e, a.account_no)}
                      noValidate
                      className="flex flex-col gap-2 sm:flex-row sm:items-end"
                    >
                      <div className="sm:flex-1">
                        <Field
                          id={id}
                          name="daily_limit"
                          label={`${t("dailyLimit")} — ${a.account_no}`}
                          hint={t("limitHint")}
                          inputMode="numeric"
                          autoComplete="off"
                          defaultValue={String(a.daily_limit)}
                          aria-invalid={note && !note.ok ? true : undefined}
                          aria-describedby={note && !note.ok ? `${id}-hint ${id}-note` : `${id}-hint`}
                        />
                      </div>
                      <button type="submit" className={`${button} sm:mb-5`}>
                        {t("changeLimit")}
                      </button>
                    </form>
                    {note && (
                      <div id={`${id}-note`} className="mt-2">
                        <Alert kind={note.ok ? "ok" : "error"}>{note.text}</Alert>
                      </div>
                    )}
                  </li>
                );
              })}
            </ul>
          )}
        </section>
      </div>
    </Shell>
  );
}
