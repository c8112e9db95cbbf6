"use client";

import { useRouter } from "next/navigation";
import { useEffect } from "react";
import { Shell } from "@/components/Shell";
import { useSession } from "@/lib/session";

export default function Home() {
  const { ready, claims, t } = useSession();
  const router = useRouter();
  useEffect(() => {
    if (ready) router.replace(claims ? "/dashboard/" : "/login/");
  }, [ready, claims, router]);
  return (
    <Shell auth={false}>
      <h1 className="text-xl font-bold">{t("appName")}</h1>
      <p>{t("loading")}</p>
    </Shell>
  );
}
